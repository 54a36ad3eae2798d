"""The main job (`make run`): train the baseline, attack it, print clean against attacked."""

from dataclasses import replace

from ..attacks import check_attack
from ..config import AttackConfig, MainConfig
from .attack import run_attack
from .train import run_train

# (label, metric name without its condition prefix); fooling_rate exists only under attack.
TABLE_ROWS = (
    ("multi-class", (("accuracy", "accuracy"), ("macro recall", "macro_recall"),
                     ("macro specificity", "macro_specificity"), ("macro F1", "macro_f1"))),
    ("health", (("accuracy", "health_accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                ("NPV", "npv"), ("PPV", "ppv"), ("false-negative rate", "fnr"))),
    ("attack", (("fooling rate", "fooling_rate"),)),
)


def format_table(columns):
    """{column title: {condition-free metric name: value}} as a plain-text table, one metric per
    line and one column per condition; a metric a column lacks is shown as '-', one no column
    has is left out."""
    titles = list(columns)
    width = max(12, *(len(t) + 2 for t in titles))
    lines = [f"{'':<22}" + "".join(f"{t:>{width}}" for t in titles)]
    for group, rows in TABLE_ROWS:
        rows = [(label, key) for label, key in rows if any(key in values for values in columns.values())]
        if rows:
            lines.append(group)
        for label, key in rows:
            cells = "".join(f"{columns[t][key]:>{width}.3f}" if key in columns[t] else f"{'-':>{width}}" for t in titles)
            lines.append(f"  {label:<20}{cells}")
    return "\n".join(lines)


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
