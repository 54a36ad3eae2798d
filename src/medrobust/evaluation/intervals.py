"""Bootstrap confidence intervals over the test images. Pure numpy.

A figure measured on N test images is re-measured on `n_resamples` resamples of those N
images drawn with replacement (seeded); its interval at `level` is the percentile interval of
the resampled values, and its point estimate is the figure on the full sample. Two figures
whose intervals overlap are not called different (DESIGN.md).

    interval_summary(y, pred, malignant_mask(), prefix="clean_")
    # {"clean_accuracy": 0.81, "clean_accuracy_ci_low": 0.78, "clean_accuracy_ci_high": 0.83, ...}

The standard figures (INTERVAL_METRICS) come from one (n_resamples, K, K) stack of confusion
matrices counted by a single np.bincount, and vectorised versions of medrobust.metrics'
definitions, so 1000 resamples cost a few milliseconds; `bootstrap_metrics` takes any
figure as a Python function and calls it once per resample.

A resample may lack a class (or every cancer), making a figure undefined (NaN) on it: such
resamples are left out of that figure's percentiles, and the interval is (nan, nan) only if
the figure is undefined on every resample. Resamples are the same for every figure and every
function here given the same (n, n_resamples, seed), so the intervals of one sample are
computed on one set of resamples.
"""

import math
from collections.abc import Callable, Mapping

import numpy as np

from .. import metrics
from ..errors import ConfigError

# The figures interval_summary reports, under medrobust.metrics.summary's names.
INTERVAL_METRICS = ("accuracy", "macro_recall", "fnr", "npv", "sensitivity", "specificity")


def _check_settings(n_resamples, level=None):
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if level is not None and not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")


def bootstrap_indices(n: int, *, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Indices of `n_resamples` resamples of n images drawn with replacement.

    Returns int64 (n_resamples, n): row r lists the images (indices in [0, n)) of resample r.
    Drawn by np.random.default_rng(seed), so one (n, n_resamples, seed) gives one array.
    n = 0 gives an empty (n_resamples, 0) array (every figure is then NaN).
    """
    _check_settings(n_resamples)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n), dtype=np.int64)


def bootstrap_confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, n_resamples: int = 1000,
                        seed: int = 0) -> np.ndarray:
    """Confusion matrix of every resample, int64 (n_resamples, n_classes, n_classes).

    y_true, y_pred: integer (N,) labels in [0, n_classes). Matrix r counts the (true,
    predicted) pairs of resample r of bootstrap_indices(N, n_resamples=, seed=), rows true and
    columns predicted as in medrobust.metrics.confusion_matrix; each sums to N. Counted by
    one np.bincount over (resample, true, predicted); memory is about 16 * n_resamples * N bytes.
    """
    metrics.confusion_matrix(y_true, y_pred, n_classes)  # validates shapes and label range
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    idx = bootstrap_indices(y_true.size, n_resamples=n_resamples, seed=seed)
    cells = n_classes * n_classes
    pair = y_true * n_classes + y_pred  # (N,) cell of each image in a flattened (K, K) matrix
    keys = pair[idx] + (np.arange(n_resamples, dtype=np.int64) * cells)[:, None]
    return np.bincount(keys.ravel(), minlength=n_resamples * cells).reshape(n_resamples, n_classes, n_classes)


def _macro(values):
    """Mean over the last axis of the defined (non-NaN) values; NaN where none is defined.
    Same arithmetic as np.nanmean (sum with NaN set to 0, divided by the count)."""
    defined = ~np.isnan(values)
    return metrics._ratio(np.where(defined, values, 0.0).sum(axis=-1), defined.sum(axis=-1))


def batched_summary(cms: np.ndarray, malignant: np.ndarray) -> dict[str, np.ndarray]:
    """The INTERVAL_METRICS of each matrix of a stack, {name: float64 (R,)}.

    cms: (R, K, K) confusion matrices (rows true); malignant: bool (K,). Same definitions as
    medrobust.metrics (accuracy, macro_recall; and on the 2x2 benign / malignant collapse
    sensitivity, specificity, npv, fnr), NaN where a denominator is 0.
    """
    cms = np.asarray(cms)
    malignant = np.asarray(malignant, dtype=bool)
    if cms.ndim != 3 or cms.shape[1] != cms.shape[2]:
        raise ValueError(f"expected a (R, K, K) stack of confusion matrices, got shape {cms.shape}")
    if malignant.shape != (cms.shape[1],):
        raise ValueError(f"malignant mask has shape {malignant.shape}, expected ({cms.shape[1]},)")
    diag = np.diagonal(cms, axis1=1, axis2=2)  # (R, K)
    total = cms.sum(axis=(1, 2))
    benign = ~malignant
    tn = cms[:, benign][:, :, benign].sum(axis=(1, 2))
    fp = cms[:, benign][:, :, malignant].sum(axis=(1, 2))
    fn = cms[:, malignant][:, :, benign].sum(axis=(1, 2))
    tp = cms[:, malignant][:, :, malignant].sum(axis=(1, 2))
    out = {
        "accuracy": metrics._ratio(diag.sum(axis=1), total),
        "macro_recall": _macro(metrics._ratio(diag, cms.sum(axis=2))),
        "fnr": metrics._ratio(fn, tp + fn),
        "npv": metrics._ratio(tn, tn + fn),
        "sensitivity": metrics._ratio(tp, tp + fn),
        "specificity": metrics._ratio(tn, tn + fp),
    }
    return {name: np.atleast_1d(np.asarray(out[name], dtype=np.float64)) for name in INTERVAL_METRICS}


def percentile_interval(values: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of resampled values (R,) at `level`, NaN values left
    out; (nan, nan) if every value is NaN."""
    _check_settings(1, level)
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.any(~np.isnan(values)):
        return (float("nan"), float("nan"))
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return (float(low), float(high))


def bootstrap_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                      metric_fns: Mapping[str, Callable[[np.ndarray, np.ndarray], float]], *, n_resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{name: (point, low, high)} for each fn of metric_fns {name: fn(y_true, y_pred) -> float}.

    y_true: (N,) labels; y_pred: any per-image array with N rows (predicted labels, scores,
    probabilities), resampled together with y_true. point is fn on the full sample; (low,
    high) the percentile interval at `level` over the resamples of bootstrap_indices(N), NaN
    resamples left out, (nan, nan) if all are NaN. Calls each fn n_resamples + 1 times: for
    the standard figures prefer interval_summary, which is vectorised.
    """
    _check_settings(n_resamples, level)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    idx = bootstrap_indices(len(y_true), n_resamples=n_resamples, seed=seed)
    out = {}
    for name, fn in metric_fns.items():
        values = np.array([fn(y_true[i], y_pred[i]) for i in idx], dtype=np.float64)
        out[name] = (float(fn(y_true, y_pred)), *percentile_interval(values, level=level))
    return out


def interval_summary(y_true: np.ndarray, y_pred: np.ndarray, malignant: np.ndarray, *, n_resamples: int = 1000,
                     seed: int = 0, level: float = 0.95, prefix: str = "") -> dict[str, float]:
    """Flat dict of INTERVAL_METRICS with their bootstrap intervals.

    y_true, y_pred: integer (N,) labels in [0, K); malignant: bool (K,), K the number of
    classes. For each figure m: `<prefix>m` (the point on the full sample, equal to
    medrobust.metrics.summary's value), `<prefix>m_ci_low`, `<prefix>m_ci_high` (percentile
    interval at `level` over bootstrap_confusion's resamples). Floats, NaN where undefined.
    """
    _check_settings(n_resamples, level)
    malignant = np.asarray(malignant, dtype=bool)
    n_classes = malignant.size
    point = batched_summary(metrics.confusion_matrix(y_true, y_pred, n_classes)[None], malignant)
    resampled = batched_summary(
        bootstrap_confusion(y_true, y_pred, n_classes, n_resamples=n_resamples, seed=seed), malignant)
    out = {}
    for name in INTERVAL_METRICS:
        low, high = percentile_interval(resampled[name], level=level)
        out[f"{prefix}{name}"] = float(point[name][0])
        out[f"{prefix}{name}_ci_low"] = low
        out[f"{prefix}{name}_ci_high"] = high
    return out


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether closed intervals a = (low, high) and b = (low, high) share a point (touching
    counts). An interval with a NaN bound is unknown and counts as overlapping: it gives no
    ground to call two figures different."""
    (a_low, a_high), (b_low, b_high) = a, b
    if any(math.isnan(float(v)) for v in (a_low, a_high, b_low, b_high)):
        return True
    return bool(a_low <= b_high and b_low <= a_high)


# The figures paired_difference compares.
PAIRED_METRICS = ("accuracy", "macro_recall", "fnr")


def paired_difference(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, malignant: np.ndarray, *,
                      n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                      prefix: str = "delta_") -> dict[str, float]:
    """The difference a - b of two sets of predictions of the same images, with its paired
    bootstrap interval: the images are resampled once and both figures are taken on each
    resample, so what the two share (which images are hard) cancels out. Overlapping marginal
    intervals are not this test: two models can differ clearly while their intervals overlap.

    y_true, pred_a, pred_b: integer (N,) labels in [0, K); malignant: bool (K,). Returns
    {`<prefix>m`, `<prefix>m_ci_low`, `<prefix>m_ci_high`} for m in PAIRED_METRICS: the
    difference on the full sample and the percentile interval at `level` of the resampled
    differences (resamples of bootstrap_indices(N, n_resamples=, seed=), NaN ones left out).
    """
    _check_settings(n_resamples, level)
    malignant = np.asarray(malignant, dtype=bool)
    k = malignant.size
    figures = {}
    for name, pred in (("a", pred_a), ("b", pred_b)):
        point = batched_summary(metrics.confusion_matrix(y_true, pred, k)[None], malignant)
        resampled = batched_summary(bootstrap_confusion(y_true, pred, k, n_resamples=n_resamples, seed=seed), malignant)
        figures[name] = (point, resampled)
    out = {}
    for m in PAIRED_METRICS:
        low, high = percentile_interval(figures["a"][1][m] - figures["b"][1][m], level=level)
        out[f"{prefix}{m}"] = float(figures["a"][0][m][0] - figures["b"][0][m][0])
        out[f"{prefix}{m}_ci_low"] = low
        out[f"{prefix}{m}_ci_high"] = high
    return out
