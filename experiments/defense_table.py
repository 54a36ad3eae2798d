"""The README's defense table: every defense of the issue built on one model, each measured
clean and under FGSM and uap_fast (transfer from the parent and white-box), at `make baseline` scale.

    python experiments/defense_table.py models:/medrobust-small_cnn/1 > defenses.md

Data from $MEDROBUST_DATA, tracking to $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db). One
`defend` run per defense lands in the experiment `defenses`; the table goes to standard output.
"""

import contextlib
import sys

from medrobust.config import DataConfig, DefendConfig
from medrobust.defenses import parse_spec
from medrobust.evaluation import CLEAN, by_condition
from medrobust.steps.defend import DEFENDED, PARENT, run_defend

SPECS = ("retrain", "llt", "retrain+llt", "distill", "detector")
# make baseline's scale: two retraining rounds of two epochs, 60 uap_fast steps, eps 2/255.
SETTINGS = dict(uap_max_steps=60, eval_attacks=("fgsm", "uap_fast"), experiment="defenses", register=False)
RETRAIN = dict(rounds=2, epochs_per_round=2)  # given only where retrain is a part (others refuse them)
THREATS = {"transfer": "transfer", "whitebox": "white-box"}
COLUMNS = (("accuracy", "accuracy"), ("macro recall", "macro_recall"), ("FNR", "fnr"), ("NPV", "npv"),
           ("fooling rate", "fooling_rate"), ("rejected", "rejected_rate"), ("FNR, rejected sent to a doctor", "referred_fnr"))


def rows_of(spec, records):
    """(defense, condition, metrics) rows from a defend run's long-format records, in their
    order; 'none' is the parent's rows (its attacks are white-box on itself)."""
    model = PARENT if spec == "none" else DEFENDED
    rows = []
    for (who, attack, threat, _), values in by_condition(records).items():
        if who != model:
            continue
        if attack == CLEAN:
            condition = "clean"
        elif spec == "none":
            condition = f"{attack} (white-box)"
        else:
            condition = f"{attack} {THREATS[threat]}"
        rows.append((spec, condition, values))
    return rows


def markdown(rows):
    lines = ["| defense | condition | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for spec, condition, values in rows:
        cells = [f"{values[k]:.3f}" if k in values else "" for _, k in COLUMNS]
        lines.append(f"| {spec} | {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(model_uri):
    rows = []
    for spec in SPECS:
        with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines; standard output is the table
            settings = SETTINGS | (RETRAIN if "retrain" in parse_spec(spec) else {})
            result = run_defend(DefendConfig(model_uri=model_uri, data=DataConfig(), defense=spec, **settings))
        if not rows:
            rows += rows_of("none", result.records)
        rows += rows_of(spec, result.records)  # run_defend logs each run's id and headline figures
    print(markdown(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/defense_table.py <model URI>")
    from medrobust import console

    console.configure()  # our progress lines on standard error
    main(sys.argv[1])
