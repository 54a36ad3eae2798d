"""The figures of one set of predictions: metrics.summary of its confusion matrix, with the
detector's rejections counted either way, and the fooling rate against a reference. Pure numpy."""

from typing import NamedTuple

import numpy as np

from .. import metrics
from ..data import CLASSES, malignant_mask


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, health_map: str = "clinical",
             prefix: str = "clean_") -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(flat metrics dict keyed `<prefix><name>`, 7x7 matrix, 2x2 health matrix) of integer
    predictions y_pred (N,) against y_true (N,)."""
    cm = metrics.confusion_matrix(y_true, y_pred, len(CLASSES))
    malignant = malignant_mask(health_map)
    cm2 = metrics.health_confusion(cm, malignant)
    return metrics.summary(cm, malignant, CLASSES, prefix=prefix), cm, cm2


def with_rejection(y_true: np.ndarray, y_pred: np.ndarray, rejected: np.ndarray,
                   health_map: str = "clinical") -> tuple[np.ndarray, np.ndarray]:
    """(strict, referred) predictions (N,) for rejected images: strict turns each into an error
    that also flips its health call (a rejected cancer counts as missed, a rejected benign
    lesion as a false alarm); referred makes it correct (a rejected image goes to a doctor,
    who is assumed right). Images not rejected keep their prediction in both."""
    y_true, y_pred, rejected = np.asarray(y_true), np.asarray(y_pred), np.asarray(rejected, dtype=bool)
    malignant = malignant_mask(health_map)
    strict, referred = y_pred.copy(), y_pred.copy()
    other_call = {bool(m): int(np.flatnonzero(malignant != m)[0]) for m in (True, False)}
    for i in np.flatnonzero(rejected):
        strict[i] = other_call[bool(malignant[y_true[i]])]
        referred[i] = y_true[i]
    return strict, referred


class Scores(NamedTuple):
    values: dict  # {metric: value}, no condition prefix
    counted: np.ndarray  # (N,) the predictions the figures count: strict ones under rejection
    confusion: np.ndarray  # (K, K) of `counted`
    health_confusion: np.ndarray  # (2, 2) of `counted`


def score(y_true: np.ndarray, y_pred: np.ndarray, rejected: np.ndarray | None = None,
          reference: np.ndarray | None = None, health_map: str = "clinical", *,
          raw: np.ndarray | None = None) -> Scores:
    """Every figure of predictions y_pred (N,) against y_true (N,), as Scores.

    rejected: (N,) bool detector verdicts, or None without a detector. With them the figures
    count rejections strictly (with_rejection) and add `referred_<figure>` (rejections sent
    to a doctor) and `rejected_rate`. reference: (N,) the same model's clean predictions, for
    `fooling_rate` of `raw` (N,) (the model's own predictions on the attacked images, when
    y_pred is a worst case counted over several; default y_pred), rejections aside.
    Values are in this order: metrics.summary's, referred_*, rejected_rate, fooling_rate.
    """
    y_pred = np.asarray(y_pred)
    counted = y_pred
    if rejected is not None:
        counted, referred = with_rejection(y_true, y_pred, rejected, health_map)
    values, cm, cm2 = evaluate(y_true, counted, health_map, prefix="")
    if rejected is not None:
        values |= evaluate(y_true, referred, health_map, prefix="referred_")[0]
        values["rejected_rate"] = float(np.mean(rejected))
    if reference is not None:
        values["fooling_rate"] = metrics.fooling_rate(reference, y_pred if raw is None else raw)
    return Scores(values, counted, cm, cm2)
