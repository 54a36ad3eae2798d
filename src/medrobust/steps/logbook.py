"""What every step logs about one set of predictions: metrics and the 7x7 and 2x2 matrices;
and the before/after table as text. The figures come from medrobust.evaluation."""

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .. import plots, tracking
from ..data import CLASSES, Dataset, malignant_mask
from ..evaluation import evaluate
from ..evaluation.operating_point import malignancy_score, threshold_for_sensitivity
from ..evaluation.suite import softmax

if TYPE_CHECKING:
    from ..defenses import DefendedClassifier

__all__ = ["TABLE_ROWS", "evaluate", "format_table", "log_confusion", "log_evaluation", "operating_point"]

log = logging.getLogger(__name__)


def operating_point(classifier: "DefendedClassifier", data: Dataset, *, target_sensitivity: float,
                    health_map: str) -> dict[str, float | str]:
    """The operating point a version carries (its pyfunc and version tags), so that predict and
    a served model make the health call a clinic would: the malignancy threshold catching
    `target_sensitivity` of the validation split's cancers. Logged as the run's
    `operating_threshold` metric; returns the `operating_*` entries of the classifier's info.
    A validation split without a cancer (a tiny subset) gives 0.5, said in the log and the info."""
    malignant = malignant_mask(health_map)
    is_malignant = malignant[data.y["val"]]
    point = {"operating_target_sensitivity": target_sensitivity, "operating_health_map": health_map}
    if not is_malignant.any():
        log.warning("the validation split holds no malignant image: the operating threshold is 0.5, not one chosen "
                    "for sensitivity %g", target_sensitivity)
        point |= {"operating_threshold": 0.5, "operating_target_sensitivity": "none: no malignant validation image"}
    else:
        scores = malignancy_score(softmax(classifier.logits(data.x["val"])), malignant)
        point["operating_threshold"] = float(threshold_for_sensitivity(scores, is_malignant, target=target_sensitivity))
    tracking.log_metrics({"operating_threshold": point["operating_threshold"]})
    return point


def log_evaluation(y_true: np.ndarray, y_pred: np.ndarray, health_map: str = "clinical",
                   condition: str = "clean") -> dict[str, float]:
    """Log `<condition>_*` metrics and the confusion matrices (JSON and figure) under confusion/."""
    values, cm, cm2 = evaluate(y_true, y_pred, health_map, prefix=f"{condition}_")
    tracking.log_metrics(values)
    log_confusion(cm, cm2, health_map, condition)
    return values


def log_confusion(cm: np.ndarray, cm2: np.ndarray, health_map: str, condition: str, *, figures: bool = True) -> None:
    """Log the 7x7 matrix `cm` and the 2x2 health matrix `cm2` of `condition` as
    confusion/<condition>_7x7.json/.png and confusion/<condition>_2x2.json/.png (the .png
    only with `figures`)."""
    tracking.log_json(
        {"labels": list(CLASSES), "rows": "true", "columns": "predicted", "matrix": cm.tolist()},
        f"confusion/{condition}_7x7.json",
    )
    tracking.log_json(
        {"labels": ["benign", "malignant"], "health_map": health_map, "rows": "true", "columns": "predicted",
         "matrix": cm2.tolist()},
        f"confusion/{condition}_2x2.json",
    )
    if not figures:
        return
    for matrix, labels, name in ((cm, CLASSES, "7x7"), (cm2, ("benign", "malignant"), "2x2")):
        fig = plots.confusion_matrix_figure(matrix, labels, f"{condition} ({health_map} health map)" if name == "2x2" else condition)
        tracking.log_figure(fig, f"confusion/{condition}_{name}.png")
        plots.close(fig)


# (label, metric name without its condition prefix); fooling_rate exists only under attack.
TABLE_ROWS = (
    ("multi-class", (("accuracy", "accuracy"), ("macro recall", "macro_recall"),
                     ("macro specificity", "macro_specificity"), ("macro F1", "macro_f1"))),
    ("health", (("accuracy", "health_accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                ("NPV", "npv"), ("PPV", "ppv"), ("false-negative rate", "fnr"))),
    ("attack", (("fooling rate", "fooling_rate"), ("rejected (detector)", "rejected_rate"))),
    # With a detector the rows above count a rejected image as an error (a rejected cancer as
    # missed); these count it as handled, since a rejected image goes to a doctor.
    ("rejected sent to a doctor", (("accuracy", "referred_accuracy"), ("macro recall", "referred_macro_recall"),
                                   ("false-negative rate", "referred_fnr"))),
)


def format_table(columns: Mapping[str, Mapping[str, float]]) -> str:
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
