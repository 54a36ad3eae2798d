import math

import numpy as np
import pytest

from medrobust import metrics

# 3 classes, rows true, columns predicted.
CM = np.array([[5, 1, 0],
               [2, 6, 2],
               [0, 0, 4]])


def test_confusion_matrix_counts_pairs():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="labels"):
        metrics.confusion_matrix([0, 1], [0], 3)


def test_multiclass_figures_by_hand():
    assert metrics.accuracy(CM) == pytest.approx(15 / 20)
    np.testing.assert_allclose(metrics.per_class_recall(CM), [5 / 6, 6 / 10, 4 / 4])
    np.testing.assert_allclose(metrics.per_class_precision(CM), [5 / 7, 6 / 7, 4 / 6])
    # class 0: negatives = 14, FP = 2 -> 12/14; class 1: negatives 10, FP 1; class 2: negatives 16, FP 2
    np.testing.assert_allclose(metrics.per_class_specificity(CM), [12 / 14, 9 / 10, 14 / 16])
    assert metrics.macro_recall(CM) == pytest.approx((5 / 6 + 0.6 + 1) / 3)
    assert metrics.macro_specificity(CM) == pytest.approx((12 / 14 + 0.9 + 14 / 16) / 3)
    f1 = [2 * 5 / (7 + 6), 2 * 6 / (7 + 10), 2 * 4 / (6 + 4)]
    assert metrics.macro_f1(CM) == pytest.approx(np.mean(f1))
    assert metrics.balanced_accuracy(CM) == metrics.macro_recall(CM)


def test_health_view_by_hand():
    malignant = np.array([False, True, True])
    cm2 = metrics.health_confusion(CM, malignant)
    # benign row: 5 right, 1 called malignant; malignant rows: 2 called benign, 6+2+4 caught
    assert cm2.tolist() == [[5, 1], [2, 12]]
    h = metrics.health_metrics(cm2)
    assert h["accuracy"] == pytest.approx(17 / 20)
    assert h["sensitivity"] == pytest.approx(12 / 14)
    assert h["specificity"] == pytest.approx(5 / 6)
    assert h["ppv"] == pytest.approx(12 / 13)
    assert h["npv"] == pytest.approx(5 / 7)
    assert h["fnr"] == pytest.approx(2 / 14)


def test_absent_class_is_nan_and_left_out_of_macro():
    cm = np.array([[3, 1, 0],
                   [0, 0, 0],   # class 1: no true image
                   [1, 0, 5]])
    recall = metrics.per_class_recall(cm)
    assert math.isnan(recall[1])
    assert metrics.macro_recall(cm) == pytest.approx((3 / 4 + 5 / 6) / 2)
    precision = metrics.per_class_precision(cm)
    assert precision[1] == 0.0  # predicted once, never right: defined, and zero
    assert np.all(np.isfinite(metrics.per_class_specificity(cm)))


def test_nothing_defined_gives_nan_not_error():
    empty = np.zeros((3, 3), dtype=int)
    assert math.isnan(metrics.accuracy(empty))
    assert math.isnan(metrics.macro_recall(empty))
    h = metrics.health_metrics(metrics.health_confusion(empty, np.array([True, False, False])))
    assert all(math.isnan(v) for v in h.values())


def test_summary_is_flat_and_prefixed():
    s = metrics.summary(CM, np.array([False, True, True]), ["a", "b", "c"], prefix="clean_")
    assert s["clean_accuracy"] == pytest.approx(0.75)
    assert s["clean_fnr"] == pytest.approx(2 / 14)
    assert s["clean_recall_b"] == pytest.approx(0.6)
    assert all(k.startswith("clean_") and isinstance(v, float) for k, v in s.items())


def test_fooling_and_success_rate_by_hand():
    y_true = np.array([0, 1, 2, 2, 1, 0])
    clean = np.array([0, 1, 2, 1, 0, 0])  # right on images 0, 1, 2, 5
    adv = np.array([0, 2, 2, 2, 0, 1])  # changed on 1, 3, 5
    assert metrics.fooling_rate(clean, adv) == pytest.approx(3 / 6)
    # of the 4 right, images 1 and 5 became wrong
    assert metrics.attack_success_rate(y_true, clean, adv) == pytest.approx(2 / 4)
    # targeted at class 2: of the 4 right, images 1 and 2 end at class 2
    assert metrics.attack_success_rate(y_true, clean, adv, target=2) == pytest.approx(2 / 4)
    assert math.isnan(metrics.attack_success_rate([1], [0], [0]))
