"""The baseline job (`make baseline`): train the baseline on all of HAM10000, attack it, defend it, attack it again, then
evaluate the defended model under the standard, adaptive and health suites, all as nested
runs of one parent run, and log clean against attacked, before against after."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .. import tracking
from ..attacks import check_attack
from ..config import AttackConfig, DefendConfig, EvaluateConfig, BaselineConfig, TrainConfig, narrow
from ..defenses import applicable, parse_spec
from .attack import run_attack
from .defend import run_defend
from .evaluate import run_evaluate
from .logbook import format_table
from .train import run_train

log = logging.getLogger(__name__)


@dataclass
class BaselineResult:
    run_id: str  # the parent run
    train: object  # TrainResult
    attacks: dict  # {column title: metrics without prefix}: clean, then each attack
    defense: object | None  # DefendResult, or None with defense=none
    evaluation: object | None = None  # EvaluateResult of the last model, or None with evaluate_suites=none


def strip_prefix(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    """{name without prefix: value} of the metrics that carry `prefix`, plus fooling_rate."""
    out = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
    if "fooling_rate" in values and prefix != "clean_":
        out["fooling_rate"] = values["fooling_rate"]
    return out


def run_baseline(config: BaselineConfig) -> BaselineResult:
    """Train, run each attack white-box on the test split, then defend and measure the
    defended model (transfer and white-box), each step a nested run of one `baseline` run."""
    for method in config.attacks:  # refuse a bad request before minutes of training
        check_attack(method, config.eps, "inf")
    defended = bool(parse_spec(config.defense))
    tags = {"medrobust.step": "baseline", "medrobust.arch": config.arch}
    with tracking.run(config.experiment, run_name=config.run_name or "baseline", tags=tags) as run_id:
        train = run_train(replace(narrow(config, TrainConfig), run_name=None))  # run_name names the parent
        columns = {"clean": strip_prefix(train.metrics, "clean_")}
        for method in config.attacks:
            outcome = run_attack(AttackConfig(
                model_uri=train.model_uri, data=config.data, method=method, eps=config.eps, seed=config.seed,
                experiment=config.experiment, run_name=f"attack-{method}",
                **({"max_steps": config.uap_max_steps} if method == "uap_fast" else {})))
            columns[f"{method} {config.eps * 255:g}/255"] = strip_prefix(outcome.metrics, "adv_")
        log.info("the baseline, clean and attacked (white-box)\n%s", format_table(columns))
        tracking.log_text(format_table(columns), "report/attacks.txt")
        defense = None
        if defended:
            # The job holds settings for every defense; hand on those the chosen parts read.
            settings = applicable(parse_spec(config.defense), {
                "rounds": config.rounds, "epochs_per_round": config.epochs_per_round, "retrain_eps": config.eps,
                "uap_max_steps": config.uap_max_steps}, also_read=("uap_max_steps",) if "uap_fast" in config.attacks else ())
            defense = run_defend(DefendConfig(
                model_uri=train.model_uri, data=config.data, defense=config.defense, eval_attacks=config.attacks,
                eval_eps=config.eps, seed=config.seed, experiment=config.experiment, register=config.register,
                **settings))
            log.info("before (parent) and after (defended); transfer = the parent's adversarial images\n%s",
                     format_table(defense.table))
        evaluation = None
        if config.evaluate_suites:
            # The registered version where there is one, so the operating point is tagged on it.
            last = defense or train
            uri = f"models:/{last.registered_name}/{last.version}" if last.version else last.model_uri
            evaluation = run_evaluate(EvaluateConfig(
                model_uri=uri, data=config.data,
                suites=config.evaluate_suites, eps=config.eps, max_images=config.evaluate_images, seed=config.seed,
                uap_max_steps=config.uap_max_steps, experiment=config.experiment))
    steps = 1 + len(config.attacks) + int(defended) + int(evaluation is not None)
    log.info("baseline: run %s, %d nested steps", run_id, steps)
    return BaselineResult(run_id, train, columns, defense, evaluation)
