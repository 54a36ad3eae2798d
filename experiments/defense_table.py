"""The README's defense table: every defense of the issue built on one model, each measured
clean and under FGSM and uap_fast (transfer from the parent and white-box), at `make run` scale.

    python experiments/defense_table.py models:/medrobust-small_cnn/1 > defenses.md

Data from $MEDROBUST_DATA, tracking to $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db). One
`defend` run per defense lands in the experiment `defenses`; the table goes to standard output.
"""

import contextlib
import sys

from medrobust.config import DataConfig, DefendConfig
from medrobust.steps.defend import run_defend

SPECS = ("retrain", "llt", "retrain+llt", "distill", "detector")
# make run's scale: two retraining rounds of two epochs, 60 uap_fast steps, eps 2/255.
SETTINGS = dict(rounds=2, epochs_per_round=2, uap_max_steps=60, eval_attacks=("fgsm", "uap_fast"),
                experiment="defenses", register=False)
COLUMNS = (("accuracy", "accuracy"), ("macro recall", "macro_recall"), ("FNR", "fnr"), ("NPV", "npv"),
           ("fooling rate", "fooling_rate"), ("rejected", "rejected_rate"), ("FNR, rejected sent to a doctor", "referred_fnr"))


def rows_of(spec, table):
    """(defense, condition, metrics) rows; 'none' comes from the parent's columns."""
    if spec == "none":
        return [("none", "clean", table["parent clean"])] + [
            ("none", f"{m} (white-box)", table[f"parent {m}"]) for m in SETTINGS["eval_attacks"]]
    rows = [(spec, "clean", table["defended clean"])]
    for m in SETTINGS["eval_attacks"]:
        rows += [(spec, f"{m} transfer", table[f"{m} transfer"]), (spec, f"{m} white-box", table[f"{m} white-box"])]
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
            result = run_defend(DefendConfig(model_uri=model_uri, data=DataConfig(), defense=spec, **SETTINGS))
        if not rows:
            rows += rows_of("none", result.table)
        rows += rows_of(spec, result.table)
        print(f"{spec}: run {result.run_id}", file=sys.stderr)
    print(markdown(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/defense_table.py <model URI>")
    main(sys.argv[1])
