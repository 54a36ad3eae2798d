"""Every figure from one confusion matrix. Pure numpy.

Conventions
-----------
- A confusion matrix `cm` has shape (K, K); `cm[i, j]` counts images of true class i predicted
  as class j (rows true, columns predicted), as in sklearn.metrics.confusion_matrix.
- The health view collapses the K classes into benign (0) and malignant (1) with a boolean
  mask of shape (K,); "positive" means malignant, so a false negative is a cancer called benign.
- Absent classes: a ratio whose denominator is zero (a class with no true image for recall, no
  predicted image for precision) is NaN, never a division by zero. Macro averages are taken
  over the classes where the figure is defined, and are NaN only if it is defined for none.
  sklearn's `zero_division=0` would silently count an absent class as a failure; NaN keeps
  "undefined" distinct from "zero".
"""

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    y_true, y_pred: integer arrays of shape (N,) with values in [0, n_classes).
    Returns an int64 array of shape (n_classes, n_classes).
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} has labels outside [0, {n_classes})")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _ratio(num, den):
    """num / den elementwise, NaN where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out if out.ndim else float(out)


def _macro(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def accuracy(cm: np.ndarray) -> float:
    """Fraction of images on the diagonal: trace(cm) / sum(cm). NaN for an empty matrix."""
    cm = np.asarray(cm)
    return _ratio(np.trace(cm), cm.sum())


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall (sensitivity) of each class, shape (K,): TP_k / (TP_k + FN_k) = cm[k,k] / row k."""
    cm = np.asarray(cm)
    return _ratio(np.diag(cm), cm.sum(axis=1))


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    """Precision of each class, shape (K,): TP_k / (TP_k + FP_k) = cm[k,k] / column k."""
    cm = np.asarray(cm)
    return _ratio(np.diag(cm), cm.sum(axis=0))


def per_class_specificity(cm: np.ndarray) -> np.ndarray:
    """Specificity of each class (one vs rest), shape (K,): TN_k / (TN_k + FP_k).

    TN_k counts images neither of class k nor predicted k; FP_k images predicted k but of
    another class. Undefined (NaN) only when every image is of class k.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    negatives = cm.sum() - cm.sum(axis=1)  # images not of class k = TN_k + FP_k
    return _ratio(negatives - fp, negatives)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 of each class, shape (K,): 2 TP / (2 TP + FP + FN). NaN if the class is neither true nor predicted."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return _ratio(2 * tp, cm.sum(axis=0) + cm.sum(axis=1))


def macro_recall(cm: np.ndarray) -> float:
    """Unweighted mean of the defined per-class recalls (= balanced accuracy)."""
    return _macro(per_class_recall(cm))


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the truth; equal to macro_recall by definition."""
    return macro_recall(cm)


def macro_specificity(cm: np.ndarray) -> float:
    """Unweighted mean of the defined per-class specificities."""
    return _macro(per_class_specificity(cm))


def macro_precision(cm: np.ndarray) -> float:
    """Unweighted mean of the defined per-class precisions."""
    return _macro(per_class_precision(cm))


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of the defined per-class F1 scores."""
    return _macro(per_class_f1(cm))


def health_confusion(cm: np.ndarray, malignant: np.ndarray) -> np.ndarray:
    """Collapse a (K, K) matrix into the 2x2 benign / malignant matrix.

    malignant: boolean array of shape (K,). Returns int64 (2, 2), rows true, columns predicted,
    index 0 = benign, 1 = malignant: [[TN, FP], [FN, TP]].
    """
    cm = np.asarray(cm)
    malignant = np.asarray(malignant, dtype=bool)
    if malignant.shape != (cm.shape[0],):
        raise ValueError(f"malignant mask has shape {malignant.shape}, expected ({cm.shape[0]},)")
    groups = [~malignant, malignant]
    return np.array([[cm[np.ix_(r, c)].sum() for c in groups] for r in groups], dtype=np.int64)


def health_metrics(cm2: np.ndarray) -> dict[str, float]:
    """The health view from a 2x2 [[TN, FP], [FN, TP]] matrix (positive = malignant).

    accuracy    (TP + TN) / all
    sensitivity TP / (TP + FN)   share of cancers caught
    specificity TN / (TN + FP)   share of benign lesions cleared
    ppv         TP / (TP + FP)   a malignant call is right
    npv         TN / (TN + FN)   a benign call is right
    fnr         FN / (TP + FN)   cancers called benign = 1 - sensitivity
    Each is NaN where its denominator is zero.
    """
    (tn, fp), (fn, tp) = np.asarray(cm2)
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "fnr": _ratio(fn, tp + fn),
    }


def summary(cm: np.ndarray, malignant: np.ndarray, class_names: Sequence[str] | None = None,
            prefix: str = "") -> dict[str, float]:
    """Flat dict of every figure, keyed `<prefix><name>` (e.g. prefix="clean_").

    Multi-class: accuracy, macro_recall, macro_specificity, macro_precision, macro_f1,
    balanced_accuracy, and recall_<class>, specificity_<class> when class_names are given.
    Health view: health_accuracy, sensitivity, specificity, ppv, npv, fnr.
    """
    cm = np.asarray(cm)
    out = {
        "accuracy": accuracy(cm),
        "macro_recall": macro_recall(cm),
        "macro_specificity": macro_specificity(cm),
        "macro_precision": macro_precision(cm),
        "macro_f1": macro_f1(cm),
        "balanced_accuracy": balanced_accuracy(cm),
    }
    if class_names is not None:
        for name, r, s in zip(class_names, per_class_recall(cm), per_class_specificity(cm)):
            out[f"recall_{name}"] = float(r)
            out[f"specificity_{name}"] = float(s)
    health = health_metrics(health_confusion(cm, malignant))
    out["health_accuracy"] = health.pop("accuracy")
    out.update(health)
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def fooling_rate(pred_clean: np.ndarray, pred_adv: np.ndarray) -> float:
    """Share of all images whose prediction changed: mean(pred_clean != pred_adv), as the thesis
    counts it (over every test image, right or wrong). pred_*: (N,) class indices."""
    pred_clean, pred_adv = np.asarray(pred_clean), np.asarray(pred_adv)
    return float(np.mean(pred_clean != pred_adv)) if pred_clean.size else float("nan")


def attack_success_rate(y_true: np.ndarray, pred_clean: np.ndarray, pred_adv: np.ndarray,
                        target: int | None = None) -> float:
    """Among the images the model got right, the share the attack made wrong (untargeted) or
    sent to class `target` (targeted). NaN if the model got none right."""
    y_true, pred_clean, pred_adv = map(np.asarray, (y_true, pred_clean, pred_adv))
    right = pred_clean == y_true
    if not right.any():
        return float("nan")
    hit = pred_adv[right] != y_true[right] if target is None else pred_adv[right] == target
    return float(np.mean(hit))
