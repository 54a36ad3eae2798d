"""The `tune` step: one Optuna study per call. Every trial is one MLflow run nested under the
study's parent run (tagged with its Optuna trial number and state); inside it the trial calls
the steps themselves (run_attack, run_poison, run_defend + run_evaluate, run_train), whose runs
nest under the trial's.

Objectives (OBJECTIVES: a name picks how a trial suggests, measures and scores):
- attack_eps: the smallest eps (a multiple of eps_step up to eps_max) at which the attack
  reaches the target fooling rate. The fooling rate rises with eps, so the trials bisect the
  grid (each midpoint enqueued into the study) instead of sampling it: log2 of the grid's size
  in trials, and the answer is exact on the grid. TPE would spend trials on points a bisection
  already rules out.
- poison_fraction: the fraction of source labels flipped to target that does the most harm per
  flipped label (FNR rise against a clean reference model trained alike, per 100 flipped
  labels); TPE; each epoch's validation macro recall is reported, and the median pruner stops a
  trial behind the others.
- defense: the retraining ratio, rounds, epochs per round, retraining attack (and WebP quality
  when the spec has llt) maximising the worst macro recall under `suites`, subject to clean
  accuracy lost <= max_accuracy_loss (an Optuna constraint); --multi-objective: the Pareto
  front of that robust macro recall against clean FNR (NSGA-II).
- train: learning rate, weight decay, dropout, small_cnn's width, class weighting (none, sqrt,
  balanced: the exponent 0, 0.5, 1), augmentation and batch size maximising validation macro
  recall; pruned per epoch; the first trial of a new study is today's defaults.

Storage: --storage, or optuna.db beside the SQLite tracking store; postgresql:// lets workers
on several machines share one study (load_if_exists) when they ask the same question (a study
remembers its settings; other settings under its name are refused). Trials of the TPE and
NSGA-II objectives send heartbeats; a trial whose worker died is failed by the next worker to
start one and retried once with its parameters.
"""

import logging
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from .. import attacks, plots, tracking
from ..config import (AttackConfig, DefendConfig, EvaluateConfig, PoisonConfig, TrainConfig, TuneConfig, flatten)
from ..defenses import parse_spec
from ..errors import ConfigError, MedrobustError, Stopped, StudyFailed
from ..evaluation.records import ENSEMBLE
from ..evaluation.report import rows
from .attack import run_attack
from .defend import run_defend
from .evaluate import MODEL, SURROGATE, run_evaluate
from .poison import run_poison
from .train import run_train

log = logging.getLogger(__name__)


class Pruned(Stopped):
    """Raised inside a trial's steps when Optuna's pruner stops it: the runs end KILLED."""


@dataclass
class TuneResult:
    run_id: str  # the study's parent run
    study_name: str
    storage: str
    best_params: dict  # of the best trial ({} if none completed); for multi-objective, of the first on the front
    best_value: float | tuple | None
    trials: list  # [{"number", "state", "params", "values", "run_id"}] of this study, every worker's
    summary: dict  # objective-specific findings (attack_eps: the eps; poison: the smallest harmful fraction)


@dataclass(frozen=True)
class Objective:
    name: str
    directions: tuple  # Optuna directions of the values
    summary: str


OBJECTIVES = {o.name: o for o in (
    Objective("attack_eps", ("minimize",), "smallest eps reaching the target fooling rate (bisection)"),
    Objective("poison_fraction", ("maximize",), "FNR rise per 100 flipped labels"),
    Objective("defense", ("maximize",), "worst macro recall under the suites, clean accuracy loss bounded"),
    Objective("train", ("maximize",), "validation macro recall"),
)}


def default_storage():
    """optuna.db beside the SQLite tracking store, else in the working folder."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def open_study(config, directions):
    """(study, storage URL); ConfigError naming a storage that cannot be reached, before any run."""
    url = config.storage or default_storage()
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # Optuna marks the retry callback experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=config.heartbeat, grace_period=2 * config.heartbeat,
                heartbeat_stale_trial_callback=retry)
            break
        except Exception as e:  # SQLAlchemy's errors for a URL, driver or server it cannot use
            # Workers starting together on a new database race to create its tables; the
            # loser finds them made a moment later.
            racing = any(s in str(e) for s in ("duplicate key", "already exists"))
            if not racing or attempt == 2:
                raise ConfigError(f"cannot open Optuna storage {url}: {str(e).splitlines()[0]}") from e
            time.sleep(1 + attempt)
    name = config.study_name or f"medrobust-{config.objective}"
    sampler, pruner = sampler_for(config), optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                directions=list(directions), load_if_exists=True)
    # A study is resumed (by this worker later, or by others) only for the same question.
    settings = study_settings(config)
    found = study.user_attrs.get("medrobust_settings")
    if found is None and not study.trials:
        study.set_user_attr("medrobust_settings", settings)
    elif found != settings or [d.name.lower() for d in study.directions] != list(directions):
        differ = sorted(k for k in set(settings) | set(found or {}) if (found or {}).get(k) != settings.get(k))
        raise ConfigError(f"study {name} in {url} was made for other settings ({', '.join(differ) or 'directions'}); "
                          "give another --study-name")
    study.sampler = sampler_for(config, n_existing=len(study.trials))
    return study, url


def study_settings(config):
    """What a study answers: every setting but the worker's own (trials, time, storage, names)."""
    own = ("n_trials", "timeout", "study_name", "storage", "heartbeat", "experiment", "run_name", "data.cache_dir")
    return {k: str(v) for k, v in flatten(config).items() if k not in own}


def sampler_seed(seed, n_existing):
    """The sampler's seed for a worker that opens a study holding `n_existing` trials: `seed` for
    a new study (deterministic by seed), else one drawn from (seed, n_existing), so that a resumed
    study or a worker joining later does not draw the first worker's parameters again."""
    return seed if n_existing == 0 else int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0])


def sampler_for(config, n_existing=0):
    seed = sampler_seed(config.seed, n_existing)
    if config.objective == "defense" and config.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=_constraint)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3,
                                      constraints_func=_constraint if config.objective == "defense" else None)


def _constraint(trial):
    return trial.user_attrs.get("constraint", (0.0,))


def check_request(config):
    """Every check before any work."""
    if config.objective == "attack_eps":
        attacks.check_attack(config.method, config.eps_max, "inf")
    if config.objective == "poison_fraction" and config.source == config.target:
        raise ConfigError(f"source and target are both {config.source}")
    if config.objective == "defense":
        names = parse_spec(config.defense)
        if "retrain" not in names:
            raise ConfigError(f"defense tunes retraining settings; {config.defense!r} has no retrain part")
    if config.objective in ("attack_eps", "defense"):
        tracking.load_classifier(config.model_uri)  # a URI that does not resolve fails here, not in trial 0


def directions(config):
    if config.objective == "defense" and config.multi_objective:
        return ("maximize", "minimize")
    return OBJECTIVES[config.objective].directions


# --- one trial per objective: suggest, run the steps, return the value(s) ------------------

def _reporter(trial, key="val_macro_recall"):
    """An on_epoch hook: report the epoch's figure to Optuna and stop the trial if pruned."""
    def on_epoch(epoch, logs):
        if key in logs:
            trial.report(float(logs[key]), epoch)
            if trial.should_prune():
                raise Pruned(f"pruned at epoch {epoch + 1}: {key} {float(logs[key]):.4f}")
    return on_epoch


def trial_attack_eps(trial, config, grid):
    # An integer index on the grid: a float range with a step must divide exactly, and
    # 16/255 by 1/255 does not in binary.
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


def _train_config(config, **changes):
    return TrainConfig(data=config.data, epochs=config.trial_epochs, seed=config.seed, experiment=config.experiment,
                       register=False, alias=None, **changes)


def trial_poison(trial, config, reference_fnr):
    fraction = trial.suggest_float("fraction", 0.05, config.fraction_max, step=0.05)
    base = _train_config(config)
    result = run_poison(PoisonConfig(**{f.name: getattr(base, f.name) for f in fields(TrainConfig)},
                                     source=config.source, target=config.target, poison_fractions=(fraction,)),
                        on_epoch=_reporter(trial)).runs[fraction]
    flipped = int(tracking.get_run(result.run_id)["params"]["poison.n_flipped"])
    rise = result.metrics["clean_fnr"] - reference_fnr
    trial.set_user_attr("fnr", result.metrics["clean_fnr"])
    trial.set_user_attr("fnr_rise", rise)
    trial.set_user_attr("flipped", flipped)
    return 100 * rise / flipped


def trial_defense(trial, config):
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


# The train objective's search space; its first trial is today's defaults (TrainConfig), so a
# study compares against them under one budget and seed.
TRAIN_SPACE = {"learning_rate": (3e-4, 5e-3), "weight_decay": (1e-3, 0.3), "dropout": (0.0, 0.5),
               "width": (0.75, 1.0, 1.5), "class_weight": ("none", "sqrt", "balanced"), "augment": (True, False),
               "batch_size": (32, 64, 128)}


def train_defaults():
    """Today's TrainConfig values of the searched settings, as the first trial's parameters
    (weight decay 0 lies outside the log range: the search's `use_weight_decay` says off)."""
    d = TrainConfig()
    return {"learning_rate": d.learning_rate, "use_weight_decay": d.weight_decay > 0, "dropout": d.dropout,
            "width": d.width, "class_weight": d.class_weight, "augment": d.augment, "batch_size": d.batch_size}


def trial_train(trial, config):
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

    report = _reporter(trial)
    result = run_train(_train_config(config, **changes), on_epoch=on_epoch)
    for k in ("clean_accuracy", "clean_macro_recall", "clean_fnr"):
        trial.set_user_attr(k, result.metrics[k])
    if not best:
        raise ConfigError("training reported no validation macro recall")
    return max(best)


# --- the study ---------------------------------------------------------------------------

def _record_failed(trial):
    """The parameters a trial drew and optuna.trial_state FAIL on its run, as it ends; a store
    that cannot take them is logged, never allowed to hide what ended the trial."""
    try:
        tracking.log_params(trial.params)
        tracking.set_tags({"optuna.trial_state": "FAIL"})
    except Exception as e:  # noqa: BLE001 - the trial's own error is the one raised
        log.warning("trial %d: could not record its parameters on its run (%s)", trial.number, e)


def _trial_run(config, study, run_trial):
    """Optuna's objective: one nested MLflow run per trial, its state tagged as Optuna's."""
    def objective(trial):
        tags = {"medrobust.step": "tune-trial", "optuna.study": study.study_name, "optuna.trial": str(trial.number)}
        try:
            with tracking.run(config.experiment, run_name=f"trial {trial.number}", tags=tags):
                try:
                    values = run_trial(trial)
                except Pruned:
                    tracking.log_params(trial.params)
                    tracking.set_tags({"optuna.trial_state": "PRUNED"})
                    raise  # the trial's run ends KILLED, as its steps' did
                except BaseException:  # a failed trial, SIGTERM, Ctrl-C: its run still says what it tried
                    _record_failed(trial)
                    raise
                tracking.log_params(trial.params)
                values = values if isinstance(values, tuple) else (values,)
                tracking.log_metrics({f"value_{i}" if len(values) > 1 else "value": v for i, v in enumerate(values)}
                                     | {k: float(v) for k, v in trial.user_attrs.items() if isinstance(v, (int, float))})
                tracking.set_tags({"optuna.trial_state": "COMPLETE"})
        except Pruned as e:
            raise optuna.TrialPruned(str(e)) from e
        return values if len(values) > 1 else values[0]
    return objective


def _bisect(study, objective, config, grid):
    """attack_eps: bisect the eps grid, each point an enqueued trial asked and told here, in
    order (a bisection is sequential, so this objective runs without Optuna's heartbeats).
    Points a finished trial of the study already measured are not measured again. Returns the
    summary: the smallest grid eps that reached the target."""
    known = {t.params["eps_index"] - 1: t.user_attrs for t in study.trials
             if t.state == TrialState.COMPLETE and "eps_index" in t.params}
    started, spent = time.monotonic(), 0

    def measure(i):
        nonlocal spent
        while i not in known:
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


def run_tune(config: TuneConfig) -> TuneResult:
    """Run config.n_trials trials of config.objective in one Optuna study; see TuneResult."""
    check_request(config)
    study, url = open_study(config, directions(config))
    tags = {"medrobust.step": "tune", "optuna.study": study.study_name, "medrobust.objective": config.objective}
    name = config.run_name or f"tune {config.objective}"
    summary = {}
    with tracking.run(config.experiment, run_name=name, tags=tags) as run_id:
        tracking.log_params(flatten(config) | {"storage": url.split("@")[-1]})  # no password in a parameter
        if config.objective == "attack_eps":
            n = math.floor(config.eps_max / config.eps_step + 1e-9)  # no point above eps_max
            grid = [(k + 1) * config.eps_step for k in range(n)]
            objective = _trial_run(config, study, lambda t: trial_attack_eps(t, config, grid))
            summary = _bisect(study, objective, config, grid)
        else:
            if config.objective == "poison_fraction":
                reference = run_train(replace(_train_config(config), run_name="reference (clean labels)"))
                summary["reference_fnr"] = reference.metrics["clean_fnr"]
                run_trial = lambda t: trial_poison(t, config, reference.metrics["clean_fnr"])  # noqa: E731
            elif config.objective == "defense":
                run_trial = lambda t: trial_defense(t, config)  # noqa: E731
            else:
                if not study.trials:
                    study.enqueue_trial(train_defaults())
                run_trial = lambda t: trial_train(t, config)  # noqa: E731
            # A trial that fails on bad input or diverges is a failed trial, not a failed study.
            study.optimize(_trial_run(config, study, run_trial), n_trials=config.n_trials, timeout=config.timeout,
                           catch=(MedrobustError,))
        trials = _trials(study, config.experiment)
        best_params, best_value = _best(study, config)
        if config.objective == "poison_fraction":
            harmful = [t for t in study.trials if t.state == TrialState.COMPLETE
                       and t.user_attrs.get("fnr_rise", -1) >= config.fnr_increase]
            summary["smallest_harmful_fraction"] = min((t.params["fraction"] for t in harmful), default=None)
        _log_study(study, trials, best_params, best_value, summary, config)
        if best_value is None:  # inside the run: a study that answered nothing is a failed run
            states = Counter(t["state"] for t in trials)
            raise StudyFailed(f"tune {config.objective}: no trial of study {study.study_name} finished "
                              f"({', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items())) or 'none ran'}); "
                              f"its trials' runs are in run {run_id}")
    log.info("tune %s: run %s, study %s, %d trials; best %s = %s%s", config.objective, run_id, study.study_name,
             len(trials), best_params, best_value, f"; {summary}" if summary else "")
    return TuneResult(run_id, study.study_name, url, best_params, best_value, trials, summary)


def _best(study, config):
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if config.objective == "defense":
        complete = [t for t in complete if _constraint(t)[0] <= 0]  # feasible only
    if not complete:
        return {}, None
    if len(study.directions) > 1:
        front = study.best_trials
        return (front[0].params, tuple(front[0].values)) if front else ({}, None)
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(complete, key=lambda t: t.value)
    return best.params, best.value


def _trials(study, experiment):
    """This study's trials with the MLflow run each left (by its optuna.trial tag)."""
    runs = {r["tags"].get("optuna.trial"): r["run_id"] for r in tracking.finished_runs(
        experiment, {"medrobust.step": "tune-trial", "optuna.study": study.study_name},
        statuses=("FINISHED", "KILLED"))}
    return [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
             "run_id": runs.get(str(t.number))} for t in study.trials]


def _log_study(study, trials, best_params, best_value, summary, config):
    if best_value is not None:
        tracking.log_params({f"best.{k}": v for k, v in best_params.items()})
        values = best_value if isinstance(best_value, tuple) else (best_value,)
        tracking.log_metrics({f"best_value_{i}" if len(values) > 1 else "best_value": v for i, v in enumerate(values)})
    tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    tracking.log_json({"best_params": best_params, "best_value": best_value, **summary}, "tune/best.json")
    tracking.log_text(study.trials_dataframe().to_csv(index=False), "tune/trials.csv")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    figures = {"history": lambda: optuna.visualization.matplotlib.plot_optimization_history(
        study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)}
    if len(study.directions) > 1:
        figures["pareto_front"] = lambda: optuna.visualization.matplotlib.plot_pareto_front(study)
    elif len(complete) > 1 and len(best_params) > 1:
        figures["importances"] = lambda: optuna.visualization.matplotlib.plot_param_importances(study)
    for name, draw in figures.items():
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib figures experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw()
        except (ValueError, RuntimeError) as e:  # too few trials for a figure: said, not fatal
            log.warning("tune: no %s figure (%s)", name, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        tracking.log_figure(fig, f"tune/{name}.png")
        plots.close(fig)


__all__ = ["OBJECTIVES", "TuneResult", "run_tune"]
