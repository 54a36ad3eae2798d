"""The main job (`make run`): train the baseline and print its clean metrics."""

from ..config import TrainConfig
from .train import run_train

TABLE_ROWS = (
    ("multi-class", (("accuracy", "clean_accuracy"), ("macro recall", "clean_macro_recall"),
                     ("macro specificity", "clean_macro_specificity"), ("macro F1", "clean_macro_f1"))),
    ("health", (("accuracy", "clean_health_accuracy"), ("sensitivity", "clean_sensitivity"),
                ("specificity", "clean_specificity"), ("NPV", "clean_npv"), ("PPV", "clean_ppv"),
                ("false-negative rate", "clean_fnr"))),
)


def format_table(values):
    """The clean metrics as a small plain-text table, one metric per line."""
    lines = []
    for group, rows in TABLE_ROWS:
        lines.append(f"{group}")
        lines.extend(f"  {label:<20} {values[key]:.3f}" for label, key in rows)
    return "\n".join(lines)


def run_main(config: TrainConfig):
    result = run_train(config)
    print(f"\nrun {result.run_id}  model {result.model_uri}"
          + (f"  registered {result.registered_name} v{result.version}" if result.version else ""))
    print(format_table(result.metrics))
    return result
