"""The tune objectives: a name picks an entry saying how its trials suggest, measure and score,
what is checked before any work, and how the study is driven (study.py runs any entry)."""

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ... import attacks, stopping, tracking
from ...config import AttackConfig, DefendConfig, EvaluateConfig, PoisonConfig, TrainConfig, TuneConfig
from ...defenses import parse_spec
from ...errors import ConfigError, MedrobustError, Stopped
from ...evaluation.records import ENSEMBLE
from ...evaluation.report import rows
from ..attack import run_attack
from ..defend import run_defend
from ..evaluate import MODEL, SURROGATE, run_evaluate
from ..poison import run_poison
from ..train import run_train


def constraint(trial: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """A trial's constraint values (<= 0: feasible), as its objective recorded them."""
    return trial.user_attrs.get("constraint", (0.0,))


def tpe(config: TuneConfig, seed: int, constrained: bool = False) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3, constraints_func=constraint if constrained else None)


class Pruned(Stopped):
    """Raised inside a trial's steps when Optuna's pruner stops it: the runs end KILLED."""


def reporter(trial: optuna.Trial, key: str = "val_macro_recall") -> Callable[[int, dict[str, float]], None]:
    """An on_epoch hook: report the epoch's figure to Optuna and stop the trial if pruned."""
    def on_epoch(epoch, logs):
        if key in logs:
            trial.report(float(logs[key]), epoch)
            if trial.should_prune():
                raise Pruned(f"pruned at epoch {epoch + 1}: {key} {float(logs[key]):.4f}")
    return on_epoch


def optimize(config: TuneConfig, study: optuna.Study, objective: Callable[[optuna.Trial], float | tuple[float, ...]],
             context: dict[str, Any]) -> dict[str, Any]:
    """Run config.n_trials trials with the study's sampler (heartbeats on); a trial that fails on
    bad input or diverges is a failed trial, not a failed study. Returns the summary so far."""
    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout, catch=(MedrobustError,),
                   callbacks=[_stop_between_trials])
    return context


def _stop_between_trials(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """SIGTERM during a trial stops it inside; between trials, here, before the next is asked
    for (checked inside the objective, it would leave a failed trial with no parameters)."""
    stopping.checkpoint()


def eps_grid(config: TuneConfig) -> list[float]:
    """attack_eps: the budgets searched, multiples of eps_step up to eps_max."""
    n = math.floor(config.eps_max / config.eps_step + 1e-9)  # no point above eps_max
    return [(k + 1) * config.eps_step for k in range(n)]


def trial_attack_eps(trial: optuna.Trial, config: TuneConfig, context: dict[str, Any]) -> float:
    # An integer index on the grid: a float range with a step must divide exactly, and
    # 16/255 by 1/255 does not in binary.
    grid = eps_grid(config)
    eps = grid[trial.suggest_int("eps_index", 1, len(grid)) - 1]
    trial.set_user_attr("eps", eps)
    result = run_attack(AttackConfig(model_uri=config.model_uri, data=config.data, method=config.method, eps=eps,
                                     max_images=config.max_images, seed=config.seed, experiment=config.experiment))
    rate = result.metrics["fooling_rate"]
    trial.set_user_attr("fooling_rate", rate)
    reached = rate >= config.target_fooling_rate
    trial.set_user_attr("reached", reached)
    # reached: the eps itself; not reached: above every eps, by how far the rate fell short
    return eps if reached else config.eps_max + (config.target_fooling_rate - rate)


def bisect(config: TuneConfig, study: optuna.Study, objective: Callable[[optuna.Trial], float | tuple[float, ...]],
           context: dict[str, Any]) -> dict[str, Any]:
    """attack_eps: bisect the eps grid, each point an enqueued trial asked and told here, in
    order (a bisection is sequential, so this objective runs without Optuna's heartbeats).
    Points a finished trial of the study already measured are not measured again. Returns the
    summary: the smallest grid eps that reached the target."""
    grid = eps_grid(config)
    known = {t.params["eps_index"] - 1: t.user_attrs for t in study.trials
             if t.state == TrialState.COMPLETE and "eps_index" in t.params}
    started, spent = time.monotonic(), 0

    def measure(i):
        nonlocal spent
        while i not in known:
            stopping.checkpoint()  # before the next trial is asked for, as _stop_between_trials
            study.enqueue_trial({"eps_index": i + 1})
            trial = study.ask()  # may be another waiting trial (a retry): it is measured and kept too
            try:
                value = objective(trial)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            study.tell(trial, value)
            known[trial.params["eps_index"] - 1], spent = dict(trial.user_attrs), spent + 1
        return known[i]

    def out_of_budget():
        return spent >= config.n_trials or (config.timeout and time.monotonic() - started > config.timeout)

    lo, hi = -1, len(grid) - 1
    if not measure(hi)["reached"]:
        return {"eps": None, "note": f"fooling rate {config.target_fooling_rate:g} not reached at eps_max "
                                     f"{grid[-1] * 255:g}/255"}
    while hi - lo > 1 and not out_of_budget():
        mid = (lo + hi) // 2
        if measure(mid)["reached"]:
            hi = mid
        else:
            lo = mid
    out = {"eps": grid[hi], "eps_255": grid[hi] * 255, "fooling_rate": known[hi]["fooling_rate"]}
    if hi - lo > 1:
        out["note"] = f"trial budget spent: the smallest eps lies in ({grid[lo] if lo >= 0 else 0:.5f}, {grid[hi]:.5f}]"
    return out


def _train_config(config, **changes):
    return TrainConfig(data=config.data, epochs=config.trial_epochs, seed=config.seed, experiment=config.experiment,
                       register=False, alias=None, **changes)


def trial_poison(trial: optuna.Trial, config: TuneConfig, context: dict[str, Any]) -> float:
    fraction = trial.suggest_float("fraction", 0.05, config.fraction_max, step=0.05)
    base = _train_config(config)
    result = run_poison(PoisonConfig(**{f.name: getattr(base, f.name) for f in fields(TrainConfig)},
                                     source=config.source, target=config.target, poison_fractions=(fraction,)),
                        on_epoch=reporter(trial)).runs[fraction]
    flipped = int(tracking.get_run(result.run_id)["params"]["poison.n_flipped"])
    rise = result.metrics["clean_fnr"] - context["reference_fnr"]
    trial.set_user_attr("fnr", result.metrics["clean_fnr"])
    trial.set_user_attr("fnr_rise", rise)
    trial.set_user_attr("flipped", flipped)
    return 100 * rise / flipped


def trial_defense(trial: optuna.Trial, config: TuneConfig, context: dict[str, Any]) -> float | tuple[float, float]:
    names = parse_spec(config.defense)
    settings = {"ratio": trial.suggest_float("ratio", 0.1, 1.0, step=0.1),
                "rounds": trial.suggest_int("rounds", 1, config.max_rounds),
                "epochs_per_round": trial.suggest_int("epochs_per_round", 1, 2),
                "retrain_attacks": (trial.suggest_categorical("retrain_attack", ["fgsm", "pgd"]),)}
    if "llt" in names:
        settings["llt_quality"] = trial.suggest_int("llt_quality", 30, 95, step=5)
    defended = run_defend(DefendConfig(model_uri=config.model_uri, data=config.data, defense=config.defense,
                                       eval_attacks=("fgsm",), max_images=config.max_images, register=False,
                                       seed=config.seed, experiment=config.experiment, **settings))
    result = run_evaluate(EvaluateConfig(model_uri=defended.model_uri, data=config.data, suites=config.suites,
                                         max_images=config.max_images, attack_model_uri=config.model_uri,
                                         n_resamples=100, seed=config.seed, experiment=config.experiment))
    table = rows(result.records, model=MODEL)
    clean = next(r for r in table if r["threat"] == "clean")
    parent_clean = next(r["value"] for r in result.records if r["model"] == SURROGATE and r["threat"] == "clean"
                        and r["metric"] == "accuracy")
    # the ensemble rows: per image the worst over every attack of the suites (evaluation/worst.py)
    robust = min(r["macro_recall"] for r in table if r["attack"] == ENSEMBLE and not math.isnan(r.get("macro_recall",
                                                                                                   math.nan)))
    loss = parent_clean - clean["accuracy"]
    trial.set_user_attr("constraint", (loss - config.max_accuracy_loss,))
    trial.set_user_attr("clean_accuracy_loss", loss)
    trial.set_user_attr("clean_fnr", clean["fnr"])
    if config.multi_objective:
        return robust, clean["fnr"]
    return robust



TRAIN_SPACE = {"learning_rate": (3e-4, 5e-3), "weight_decay": (1e-3, 0.3), "dropout": (0.0, 0.5),
               "width": (0.75, 1.0, 1.5), "class_weight": ("none", "sqrt", "balanced"), "augment": (True, False),
               "batch_size": (32, 64, 128)}


def train_defaults() -> dict[str, Any]:
    """Today's TrainConfig values of the searched settings, as the first trial's parameters
    (weight decay 0 lies outside the log range: the search's `use_weight_decay` says off)."""
    d = TrainConfig()
    return {"learning_rate": d.learning_rate, "use_weight_decay": d.weight_decay > 0, "dropout": d.dropout,
            "width": d.width, "class_weight": d.class_weight, "augment": d.augment, "batch_size": d.batch_size}


def trial_train(trial: optuna.Trial, config: TuneConfig, context: dict[str, Any]) -> float:
    space = TRAIN_SPACE
    changes = {"learning_rate": trial.suggest_float("learning_rate", *space["learning_rate"], log=True),
               "weight_decay": (trial.suggest_float("weight_decay", *space["weight_decay"], log=True)
                                if trial.suggest_categorical("use_weight_decay", [False, True]) else 0.0),
               "dropout": trial.suggest_float("dropout", *space["dropout"]),
               "width": trial.suggest_categorical("width", list(space["width"])),
               "class_weight": trial.suggest_categorical("class_weight", list(space["class_weight"])),
               "augment": trial.suggest_categorical("augment", list(space["augment"])),
               "batch_size": trial.suggest_categorical("batch_size", list(space["batch_size"]))}
    best = []

    def on_epoch(epoch, logs):
        if "val_macro_recall" in logs:
            best.append(float(logs["val_macro_recall"]))
        report(epoch, logs)

    report = reporter(trial)
    result = run_train(_train_config(config, **changes), on_epoch=on_epoch)
    for k in ("clean_accuracy", "clean_macro_recall", "clean_fnr"):
        trial.set_user_attr(k, result.metrics[k])
    if not best:
        raise ConfigError("training reported no validation macro recall")
    return max(best)



@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    trial: Callable  # (optuna trial, config, context) -> value or tuple of values
    directions: Callable = lambda config: ("maximize",)
    check: Callable = lambda config: None  # (config): every check before any work
    prepare: Callable = lambda config, study: {}  # (config, study) -> context: what trials need, and the summary's start
    drive: Callable = optimize  # (config, study, objective, context) -> summary
    conclude: Callable = lambda config, study: {}  # (config, study) -> more of the summary
    constrained: bool = False  # trials record a constraint; only feasible ones can be best
    sampler: Callable = tpe  # (config, seed) -> Optuna sampler


def _check_attack_eps(config):
    attacks.check_attack(config.method, config.eps_max, "inf")
    tracking.load_classifier(config.model_uri)  # a URI that does not resolve fails here, not in trial 0


def _check_poison(config):
    if config.source == config.target:
        raise ConfigError(f"source and target are both {config.source}")


def _check_defense(config):
    if "retrain" not in parse_spec(config.defense):
        raise ConfigError(f"defense tunes retraining settings; {config.defense!r} has no retrain part")
    tracking.load_classifier(config.model_uri)


def _reference(config, study):
    reference = run_train(_train_config(config, run_name="reference (clean labels)"))
    return {"reference_fnr": reference.metrics["clean_fnr"]}


def _harmful(config, study):
    harmful = [t for t in study.trials if t.state == TrialState.COMPLETE
               and t.user_attrs.get("fnr_rise", -1) >= config.fnr_increase]
    return {"smallest_harmful_fraction": min((t.params["fraction"] for t in harmful), default=None)}


def _defaults_first(config, study):
    if not study.trials:
        study.enqueue_trial(train_defaults())
    return {}


OBJECTIVES = {o.name: o for o in (
    Objective("attack_eps", "smallest eps reaching the target fooling rate (bisection)", trial_attack_eps,
              directions=lambda config: ("minimize",), check=_check_attack_eps, drive=bisect),
    Objective("poison_fraction", "FNR rise per 100 flipped labels", trial_poison, check=_check_poison,
              prepare=_reference, conclude=_harmful),
    Objective("defense", "worst macro recall under the suites, clean accuracy loss bounded", trial_defense,
              directions=lambda config: ("maximize", "minimize") if config.multi_objective else ("maximize",),
              check=_check_defense, constrained=True,
              sampler=lambda config, seed: (optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraint)
                                            if config.multi_objective else tpe(config, seed, constrained=True))),
    Objective("train", "validation macro recall", trial_train, prepare=_defaults_first),
)}
