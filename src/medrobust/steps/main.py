"""The main job (`make run`): train the baseline, attack it, print clean against attacked."""

from dataclasses import replace

from ..attacks import check_attack
from ..config import AttackConfig, MainConfig
from .attack import run_attack
from .report import format_table
from .train import run_train


def strip_prefix(values, prefix):
    """{name without prefix: value} of the metrics that carry `prefix`, plus fooling_rate."""
    out = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
    if "fooling_rate" in values and prefix != "clean_":
        out["fooling_rate"] = values["fooling_rate"]
    return out


def run_main(config: MainConfig):
    """Train, then run each attack white-box on the test split; returns {column title: metrics}."""
    for method in config.attacks:  # refuse a bad attack before 17 minutes of training
        check_attack(method, config.eps, "inf")
    train = config.train
    result = run_train(train)
    print(f"\nrun {result.run_id}  model {result.model_uri}"
          + (f"  registered {result.registered_name} v{result.version}" if result.version else ""))
    columns = {"clean": strip_prefix(result.metrics, "clean_")}
    for method in config.attacks:
        attack = AttackConfig(model_uri=result.model_uri, data=train.data, method=method, eps=config.eps,
                              max_steps=config.uap_max_steps, seed=train.seed, experiment=train.experiment)
        outcome = run_attack(replace(attack, run_name=f"attack-{method}"))
        columns[f"{method} {config.eps * 255:g}/255"] = strip_prefix(outcome.metrics, "adv_")
        print(f"attack run {outcome.run_id}: {method}")
    print(format_table(columns))
    return columns
