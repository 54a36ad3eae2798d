"""What every step logs about one set of predictions: metrics and the 7x7 and 2x2 matrices."""

from .. import metrics, plots, tracking
from ..data import CLASSES, malignant_mask


def evaluate(y_true, y_pred, health_map="clinical", prefix="clean_"):
    """(flat metrics dict, 7x7 matrix, 2x2 health matrix) of integer predictions."""
    cm = metrics.confusion_matrix(y_true, y_pred, len(CLASSES))
    malignant = malignant_mask(health_map)
    cm2 = metrics.health_confusion(cm, malignant)
    return metrics.summary(cm, malignant, CLASSES, prefix=prefix), cm, cm2


def log_evaluation(y_true, y_pred, health_map="clinical", condition="clean"):
    """Log `<condition>_*` metrics and the confusion matrices (JSON and figure) under confusion/."""
    values, cm, cm2 = evaluate(y_true, y_pred, health_map, prefix=f"{condition}_")
    tracking.log_metrics(values)
    tracking.log_json(
        {"labels": list(CLASSES), "rows": "true", "columns": "predicted", "matrix": cm.tolist()},
        f"confusion/{condition}_7x7.json",
    )
    tracking.log_json(
        {"labels": ["benign", "malignant"], "health_map": health_map, "rows": "true", "columns": "predicted",
         "matrix": cm2.tolist()},
        f"confusion/{condition}_2x2.json",
    )
    for matrix, labels, name in ((cm, CLASSES, "7x7"), (cm2, ("benign", "malignant"), "2x2")):
        fig = plots.confusion_matrix_figure(matrix, labels, f"{condition} ({health_map} health map)" if name == "2x2" else condition)
        tracking.log_figure(fig, f"confusion/{condition}_{name}.png")
        plots.close(fig)
    return values
