"""The clinical operating point: a threshold on the malignancy score. Pure numpy and sklearn.

Beside the argmax figures, the health decision calls an image malignant when its malignancy
score (the summed probability of the malignant classes) is at or above a threshold chosen on
the validation images for a target sensitivity, and fixed before any attack (DESIGN.md).

    scores = malignancy_score(probabilities_val, malignant_mask())
    t = threshold_for_sensitivity(scores, malignant_mask()[y_val], target=0.95)
    health_at_threshold(malignancy_score(probabilities_test, malignant_mask()), malignant_mask()[y_test], t)

Throughout, "malignant" is the positive class and an image is called malignant when its score
is >= the threshold, as in sklearn.metrics.roc_curve.
"""

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .. import metrics
from ..errors import ConfigError
from .intervals import interval_summary

# The health figures reported at the operating point, each with its bootstrap interval.
OPERATING_FIGURES = ("sensitivity", "specificity", "npv", "fnr")


def _scores_and_truth(scores, is_malignant):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_malignant = np.asarray(is_malignant, dtype=bool).ravel()
    if scores.shape != is_malignant.shape:
        raise ValueError(f"scores has {scores.size} values but is_malignant has {is_malignant.size}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, is_malignant


def malignancy_score(probabilities: np.ndarray, malignant: np.ndarray) -> np.ndarray:
    """Summed probability of the malignant classes, float64 (N,), in [0, 1].

    probabilities: (N, K) class probabilities (rows sum to 1, e.g. a softmax of logits);
    malignant: bool (K,) mask of the malignant classes (data.labels.malignant_mask()).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    malignant = np.asarray(malignant, dtype=bool)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must have shape (N, K), got {probabilities.shape}")
    if malignant.shape != (probabilities.shape[1],):
        raise ValueError(f"malignant mask has shape {malignant.shape}, expected ({probabilities.shape[1]},)")
    return probabilities[:, malignant].sum(axis=1)


def threshold_for_sensitivity(scores: np.ndarray, is_malignant: np.ndarray, *, target: float = 0.95) -> float:
    """The largest threshold t whose sensitivity on these images, the share of malignant
    images with score >= t, is at least `target`.

    scores: (N,) malignancy scores; is_malignant: bool (N,) truth; target in (0, 1).
    t is always one of the malignant images' scores: the k-th highest, k the smallest count
    with k / P >= target (P malignant images). Any higher threshold catches fewer than k.
    Ties: an image whose score equals t is called malignant (>=), so images tied at t go the
    same way; when several malignant images share the k-th score the sensitivity reached is
    above target, and benign images tied at t count as false positives.
    ConfigError if target is not in (0, 1) or there is no malignant image.
    """
    if not 0 < target < 1:
        raise ConfigError(f"target sensitivity must be in (0, 1), got {target!r}")
    scores, is_malignant = _scores_and_truth(scores, is_malignant)
    positives = np.sort(scores[is_malignant])[::-1]  # malignant scores, highest first
    n_pos = positives.size
    if n_pos == 0:
        raise ConfigError("cannot choose a threshold for a target sensitivity: no malignant image")
    # Smallest k with k / P >= target, in the float arithmetic that computes sensitivity.
    k = min(max(int(np.ceil(target * n_pos)), 1), n_pos)
    while k > 1 and (k - 1) / n_pos >= target:
        k -= 1
    while k < n_pos and k / n_pos < target:
        k += 1
    return float(positives[k - 1])


def health_at_threshold(scores: np.ndarray, is_malignant: np.ndarray, threshold: float) -> dict[str, float]:
    """The health view of calling malignant every image with score >= threshold.

    scores: (N,) malignancy scores; is_malignant: bool (N,) truth. Returns {sensitivity,
    specificity, npv, ppv, fnr, accuracy} as floats, the definitions of
    medrobust.metrics.health_metrics on the 2x2 [[TN, FP], [FN, TP]], NaN where a
    denominator is 0.
    """
    scores, is_malignant = _scores_and_truth(scores, is_malignant)
    called = scores >= threshold
    cm2 = np.array([[np.sum(~is_malignant & ~called), np.sum(~is_malignant & called)],
                    [np.sum(is_malignant & ~called), np.sum(is_malignant & called)]], dtype=np.int64)
    health = metrics.health_metrics(cm2)
    return {k: float(health[k]) for k in ("sensitivity", "specificity", "npv", "ppv", "fnr", "accuracy")}


def operating_summary(scores: np.ndarray, is_malignant: np.ndarray, threshold: float, *, n_resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """OPERATING_FIGURES at the threshold with their bootstrap intervals, flat and prefixed `op_`.

    scores: (N,) malignancy scores; is_malignant: bool (N,) truth. Returns {op_m, op_m_ci_low,
    op_m_ci_high} for m in OPERATING_FIGURES: op_m equals health_at_threshold's m, the interval
    is over the resamples of intervals.bootstrap_indices(N, n_resamples=, seed=), the same
    resamples as the argmax figures' intervals of the same images (the benign / malignant
    decision is a 2-class confusion, so intervals.interval_summary computes it).
    """
    scores, is_malignant = _scores_and_truth(scores, is_malignant)
    called = (scores >= threshold).astype(np.int64)
    figures = interval_summary(is_malignant.astype(np.int64), called, np.array([False, True]),
                               n_resamples=n_resamples, seed=seed, level=level)
    return {f"op_{m}{end}": figures[f"{m}{end}"] for m in OPERATING_FIGURES for end in ("", "_ci_low", "_ci_high")}


def roc(scores: np.ndarray, is_malignant: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(fpr, tpr, thresholds, auc) of the malignancy score against the truth.

    fpr, tpr, thresholds: float arrays from sklearn.metrics.roc_curve (an image is positive
    when score >= threshold); auc: sklearn.metrics.roc_auc_score. With only one class present
    (or no image) the curve is undefined: empty arrays and auc NaN.
    """
    scores, is_malignant = _scores_and_truth(scores, is_malignant)
    if np.unique(is_malignant).size < 2:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty.copy(), empty.copy(), float("nan")
    fpr, tpr, thresholds = roc_curve(is_malignant, scores)
    return fpr, tpr, thresholds, float(roc_auc_score(is_malignant, scores))
