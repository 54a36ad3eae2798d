"""Bootstrap intervals and the clinical operating point, on synthetic arrays."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medrobust import metrics
from medrobust.data.labels import N_CLASSES, malignant_mask
from medrobust.errors import ConfigError
from medrobust.evaluation import intervals, operating_point
from medrobust.evaluation.intervals import (INTERVAL_METRICS, bootstrap_confusion, bootstrap_indices,
                                            bootstrap_metrics, interval_summary, overlap)
from medrobust.evaluation.operating_point import (OPERATING_FIGURES, health_at_threshold, malignancy_score,
                                                  operating_summary, roc, threshold_for_sensitivity)

MALIGNANT = malignant_mask()


def _predictions(n, error_rate, seed, n_classes=N_CLASSES):
    """Labels (n,) and predictions wrong on about `error_rate` of them (a random other class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    wrong = rng.random(n) < error_rate
    pred = np.where(wrong, (y + rng.integers(1, n_classes, n)) % n_classes, y)
    return y, pred


def _accuracy(y, p):
    return float(np.mean(y == p))


# --- bootstrap_indices / bootstrap_confusion -------------------------------------------------

def test_indices_shape_range_and_seed():
    idx = bootstrap_indices(50, n_resamples=200, seed=3)
    assert idx.shape == (200, 50) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < 50
    assert len(np.unique(idx[0])) < 50  # drawn with replacement
    np.testing.assert_array_equal(idx, bootstrap_indices(50, n_resamples=200, seed=3))
    assert not np.array_equal(idx, bootstrap_indices(50, n_resamples=200, seed=4))
    assert bootstrap_indices(0, n_resamples=5).shape == (5, 0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_n_resamples_raises(bad):
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_indices(10, n_resamples=bad)


def test_batched_confusion_sums_to_n_and_matches_a_slow_loop():
    y, pred = _predictions(300, 0.3, seed=1)
    cms = bootstrap_confusion(y, pred, N_CLASSES, n_resamples=400, seed=7)
    assert cms.shape == (400, N_CLASSES, N_CLASSES)
    np.testing.assert_array_equal(cms.sum(axis=(1, 2)), np.full(400, 300))
    idx = bootstrap_indices(300, n_resamples=400, seed=7)
    for r in (0, 1, 137, 399):
        np.testing.assert_array_equal(cms[r], metrics.confusion_matrix(y[idx[r]], pred[idx[r]], N_CLASSES))
    # the resamples differ from one another and from the full sample
    assert not np.array_equal(cms[0], cms[1])


def test_batched_confusion_validates_labels():
    with pytest.raises(ValueError, match="outside"):
        bootstrap_confusion([0, 7], [0, 1], N_CLASSES, n_resamples=3)


# --- interval_summary --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_point_values_equal_metrics_summary_exactly(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, N_CLASSES, n)
    pred = rng.integers(0, N_CLASSES, n)
    if seed == 0:
        y[y == 3] = 5  # an absent class: its recall is NaN and left out of macro_recall
    if seed == 1:
        y = np.where(MALIGNANT[y], 5, y)  # no cancer: fnr and sensitivity undefined
    expected = metrics.summary(metrics.confusion_matrix(y, pred, N_CLASSES), MALIGNANT, prefix="clean_")
    got = interval_summary(y, pred, MALIGNANT, n_resamples=50, seed=seed, prefix="clean_")
    for name in INTERVAL_METRICS:
        a, b = got[f"clean_{name}"], expected[f"clean_{name}"]
        assert (math.isnan(a) and math.isnan(b)) or a == b, name
    if seed == 1:
        assert math.isnan(got["clean_fnr"]) and math.isnan(got["clean_fnr_ci_low"])


def test_batched_figures_equal_metrics_on_each_resample():
    y, pred = _predictions(40, 0.5, seed=2)  # small: some resamples lack a class
    cms = bootstrap_confusion(y, pred, N_CLASSES, n_resamples=30, seed=0)
    batched = intervals.batched_summary(cms, MALIGNANT)
    for r in range(30):
        expected = metrics.summary(cms[r], MALIGNANT)
        for name in INTERVAL_METRICS:
            np.testing.assert_equal(batched[name][r], expected[name])


def test_summary_keys_and_interval_contains_point():
    y, pred = _predictions(1000, 0.25, seed=3)
    out = interval_summary(y, pred, MALIGNANT, seed=0, prefix="adv_")
    assert set(out) == {f"adv_{m}{s}" for m in INTERVAL_METRICS for s in ("", "_ci_low", "_ci_high")}
    for m in INTERVAL_METRICS:
        low, point, high = out[f"adv_{m}_ci_low"], out[f"adv_{m}"], out[f"adv_{m}_ci_high"]
        assert low < point < high, m
        assert 0 <= low and high <= 1
    assert out["adv_accuracy"] == pytest.approx(np.mean(y == pred))
    assert out["adv_fnr"] == pytest.approx(1 - out["adv_sensitivity"])


def test_interval_shrinks_with_more_images():
    def width(n):
        y, pred = _predictions(n, 0.2, seed=n)
        out = interval_summary(y, pred, MALIGNANT, seed=0)
        return out["accuracy_ci_high"] - out["accuracy_ci_low"]

    small, large = width(100), width(2000)
    # the width goes as 1 / sqrt(n): about sqrt(20) ~ 4.5 times narrower
    assert large < small / 3
    assert 0.1 < small < 0.22 and 0.02 < large < 0.05


def test_same_seed_same_intervals_other_seed_different():
    y, pred = _predictions(300, 0.3, seed=4)
    a = interval_summary(y, pred, MALIGNANT, seed=11)
    assert a == interval_summary(y, pred, MALIGNANT, seed=11)
    b = interval_summary(y, pred, MALIGNANT, seed=12)
    assert a["accuracy"] == b["accuracy"]  # the point does not depend on the seed
    assert (a["accuracy_ci_low"], a["accuracy_ci_high"]) != (b["accuracy_ci_low"], b["accuracy_ci_high"])


def test_level_widens_the_interval_and_is_checked():
    y, pred = _predictions(300, 0.3, seed=5)
    w = {lv: (lambda o: o["accuracy_ci_high"] - o["accuracy_ci_low"])(interval_summary(y, pred, MALIGNANT, level=lv))
         for lv in (0.5, 0.95)}
    assert w[0.5] < w[0.95]
    for bad in (0, 1, 1.5):
        with pytest.raises(ConfigError, match="level"):
            interval_summary(y, pred, MALIGNANT, level=bad)


# --- bootstrap_metrics ---------------------------------------------------------------------------

def test_bootstrap_metrics_agrees_with_the_batched_path():
    y, pred = _predictions(200, 0.3, seed=6)
    got = bootstrap_metrics(y, pred, {"accuracy": _accuracy}, n_resamples=300, seed=9)
    fast = interval_summary(y, pred, MALIGNANT, n_resamples=300, seed=9)
    assert got["accuracy"][0] == _accuracy(y, pred)
    assert got["accuracy"][1:] == pytest.approx((fast["accuracy_ci_low"], fast["accuracy_ci_high"]), abs=1e-12)
    assert got == bootstrap_metrics(y, pred, {"accuracy": _accuracy}, n_resamples=300, seed=9)
    assert got != bootstrap_metrics(y, pred, {"accuracy": _accuracy}, n_resamples=300, seed=10)


def test_bootstrap_metrics_ignores_nan_resamples_and_all_nan_gives_nan():
    y = np.array([0] * 19 + [1])  # one positive: many resamples lack it
    pred = y.copy()

    def recall_of_1(t, p):
        return float(np.mean(p[t == 1] == 1)) if np.any(t == 1) else float("nan")

    out = bootstrap_metrics(y, pred, {"r": recall_of_1, "never": lambda t, p: float("nan")}, n_resamples=200)
    assert out["r"] == (1.0, 1.0, 1.0)
    point, low, high = out["never"]
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)


def test_bootstrap_metrics_takes_scores_for_an_auc_interval():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.3
    scores = np.clip(truth * 0.3 + rng.random(300) * 0.7, 0, 1)
    out = bootstrap_metrics(truth, scores, {"auc": lambda t, s: roc(s, t)[3]}, n_resamples=100)
    point, low, high = out["auc"]
    assert point == pytest.approx(roc_auc_score(truth, scores))
    assert low < point < high


# --- overlap -------------------------------------------------------------------------------------

def test_overlap():
    assert overlap((0.1, 0.3), (0.2, 0.4)) and overlap((0.2, 0.4), (0.1, 0.3))
    assert overlap((0.1, 0.3), (0.3, 0.5))  # touching
    assert overlap((0.1, 0.5), (0.2, 0.3))  # nested
    assert not overlap((0.1, 0.2), (0.3, 0.4)) and not overlap((0.3, 0.4), (0.1, 0.2))
    assert overlap((float("nan"), float("nan")), (0.3, 0.4))  # unknown: not called different


# --- operating point -----------------------------------------------------------------------------

def test_malignancy_score_sums_malignant_probabilities():
    p = np.array([[0.1, 0.2, 0.0, 0.0, 0.3, 0.4, 0.0],
                  [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(malignancy_score(p, MALIGNANT), [0.6, 0.0])
    with pytest.raises(ValueError, match="mask"):
        malignancy_score(p, MALIGNANT[:3])


def _sensitivity(scores, truth, t):
    return float(np.mean(scores[truth] >= t))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_threshold_reaches_target_and_is_the_largest(target, ties):
    rng = np.random.default_rng(int(target * 100))
    truth = rng.random(500) < 0.3
    scores = np.clip(0.3 * truth + 0.7 * rng.random(500), 0, 1)
    if ties:
        scores = np.round(scores, 2)
    t = threshold_for_sensitivity(scores, truth, target=target)
    assert _sensitivity(scores, truth, t) >= target
    assert health_at_threshold(scores, truth, t)["sensitivity"] >= target
    higher = np.unique(scores)[np.unique(scores) > t]
    assert higher.size  # so the next check is not vacuous
    assert _sensitivity(scores, truth, higher[0]) < target  # the next distinct score drops below
    assert t in scores[truth]


def test_threshold_with_ties_at_the_threshold():
    # 4 cancers, target 0.5 -> k = 2; the 2nd and 3rd highest tie, so both are caught (0.75)
    scores = np.array([0.9, 0.6, 0.6, 0.2, 0.6, 0.1])
    truth = np.array([True, True, True, True, False, False])
    t = threshold_for_sensitivity(scores, truth, target=0.5)
    assert t == 0.6
    h = health_at_threshold(scores, truth, t)
    assert h["sensitivity"] == 0.75 and h["specificity"] == 0.5  # the tied benign image is a false alarm


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.2])
def test_bad_target_raises(bad):
    with pytest.raises(ConfigError, match="target"):
        threshold_for_sensitivity([0.1, 0.9], [False, True], target=bad)


def test_no_malignant_image_raises():
    with pytest.raises(ConfigError, match="no malignant"):
        threshold_for_sensitivity([0.1, 0.9], [False, False], target=0.9)


def test_health_at_threshold_by_hand():
    scores = np.array([0.9, 0.7, 0.4, 0.2, 0.8, 0.3, 0.1, 0.05])
    truth = np.array([True, True, True, False, False, False, False, True])
    # threshold 0.5: called malignant = 0.9, 0.7, 0.8 -> TP 2, FP 1, FN 2 (0.4, 0.05), TN 3
    h = health_at_threshold(scores, truth, 0.5)
    assert h == pytest.approx({"sensitivity": 2 / 4, "specificity": 3 / 4, "npv": 3 / 5, "ppv": 2 / 3,
                               "fnr": 2 / 4, "accuracy": 5 / 8})
    # no image called malignant: ppv has a zero denominator
    assert math.isnan(health_at_threshold(scores, truth, 2.0)["ppv"])


def test_operating_summary_points_are_health_at_threshold_and_intervals_the_slow_bootstrap():
    rng = np.random.default_rng(4)
    truth = rng.random(300) < 0.3
    scores = np.clip(0.25 * truth + rng.random(300), 0, 1)
    op = operating_summary(scores, truth, 0.6, n_resamples=200, seed=3)
    at = health_at_threshold(scores, truth, 0.6)
    slow = bootstrap_metrics(truth, scores, {m: (lambda t, s, m=m: health_at_threshold(s, t, 0.6)[m])
                                             for m in OPERATING_FIGURES}, n_resamples=200, seed=3)
    for m in OPERATING_FIGURES:
        assert op[f"op_{m}"] == pytest.approx(at[m])
        assert (op[f"op_{m}_ci_low"], op[f"op_{m}_ci_high"]) == pytest.approx(slow[m][1:])
        assert op[f"op_{m}_ci_low"] < op[f"op_{m}"] < op[f"op_{m}_ci_high"]
    assert op["op_fnr_ci_low"] == pytest.approx(1 - op["op_sensitivity_ci_high"])
    # another seed draws other resamples: another interval
    assert operating_summary(scores, truth, 0.6, n_resamples=200, seed=4)["op_fnr_ci_low"] != op["op_fnr_ci_low"]


def test_roc_auc_equals_sklearn_and_one_when_separated():
    rng = np.random.default_rng(1)
    truth = rng.random(200) < 0.4
    scores = 0.2 * truth + rng.random(200)
    fpr, tpr, thresholds, auc = roc(scores, truth)
    assert auc == roc_auc_score(truth, scores)
    assert 0.5 < auc < 1
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr.shape == tpr.shape == thresholds.shape
    assert roc(np.where(truth, 0.9, 0.1), truth)[3] == 1.0
    fpr, tpr, thresholds, auc = roc(scores, np.ones(200, dtype=bool))
    assert math.isnan(auc) and fpr.size == 0


def test_package_exports():
    from medrobust import evaluation
    for name in ("interval_summary", "bootstrap_metrics", "threshold_for_sensitivity", "roc", "overlap"):
        assert name in evaluation.__all__ and hasattr(evaluation, name)
    assert evaluation.health_at_threshold is operating_point.health_at_threshold
