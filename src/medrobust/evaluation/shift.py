"""A model under natural shift: its figures on the same images under each corruption and
severity (evaluation/corruptions.py), paired against its clean figures.

    records = measure_corruptions(classifier, x, y, clean_pred, clean_scores, threshold=0.31, model="target")

Counted as ImageNet-C counts: each (corruption, severity) as measured, without the
worst-of-clean counting attacks get: a shift is no adversary, so a figure above clean is
possible, and the paired change (this row minus clean on the same bootstrap resamples) says
whether it is one. A record per figure: record(model, corruption, CORRUPTION, severity, ...);
per severity one MEAN row, the mean over the corruptions taken resample by resample.
Pure: no MLflow.
"""

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from ..data import malignant_mask
from .corruptions import CHUNK, CORRUPTIONS, SEVERITIES, check_corruptions, corrupt
from .intervals import batched_summary, bootstrap_confusion, percentile_interval
from .operating_point import malignancy_score
from .records import CORRUPTION, MEAN, Record, record
from .scoring import with_rejection

if TYPE_CHECKING:
    from ..defenses.defended import DefendedClassifier

# The figures of a corruption row: argmax ones, and the health call at the operating threshold.
FIGURES = ("accuracy", "macro_recall", "fnr")
OPERATING = ("op_fnr", "op_specificity")


def resampled_figures(y: np.ndarray, predictions: np.ndarray, scores: np.ndarray, malignant: np.ndarray,
                      threshold: float | None, *, n_resamples: int, seed: int) -> dict[str, tuple[float, np.ndarray]]:
    """{figure: (value on all N images, (R,) values on bootstrap resamples)} of FIGURES, and of
    OPERATING when threshold is not None. The resamples are intervals.bootstrap_indices(N,
    n_resamples, seed), the same for every call with the same N: figures of two sets of
    predictions of the same images pair resample by resample."""
    out = {}
    k = len(malignant)
    point = batched_summary(np.bincount(y * k + predictions, minlength=k * k).reshape(1, k, k), malignant)
    stack = batched_summary(bootstrap_confusion(y, predictions, k, n_resamples=n_resamples, seed=seed), malignant)
    out.update({m: (float(point[m][0]), stack[m]) for m in FIGURES})
    if threshold is not None:
        truth, called = malignant[y].astype(np.int64), (np.asarray(scores) >= threshold).astype(np.int64)
        binary = np.array([False, True])
        point = batched_summary(np.bincount(truth * 2 + called, minlength=4).reshape(1, 2, 2), binary)
        stack = batched_summary(bootstrap_confusion(truth, called, 2, n_resamples=n_resamples, seed=seed), binary)
        out.update({f"op_{m}": (float(point[m][0]), stack[m]) for m in ("fnr", "specificity")})
    return out


def row_values(figures: Mapping[str, tuple[float, np.ndarray]],
               clean: Mapping[str, tuple[float, np.ndarray]]) -> dict[str, float]:
    """A row's {figure, figure_ci_low, figure_ci_high, change_figure, change_figure_ci_low,
    change_figure_ci_high}: its figures with 95 % intervals and the paired change from `clean`
    (this row minus clean on the same resamples), both from resampled_figures."""
    out = {}
    for m, (value, stack) in figures.items():
        out[m], (out[f"{m}_ci_low"], out[f"{m}_ci_high"]) = value, percentile_interval(stack)
        change = stack - clean[m][1]
        out[f"change_{m}"] = value - clean[m][0]
        out[f"change_{m}_ci_low"], out[f"change_{m}_ci_high"] = percentile_interval(change)
    return out


def measure_corruptions(classifier: "DefendedClassifier", x: np.ndarray, y: np.ndarray, clean_predictions: np.ndarray,
                        clean_scores: np.ndarray, *, threshold: float | None, model: str, health_map: str = "clinical",
                        corruptions: Sequence[str] = tuple(CORRUPTIONS), severities: Sequence[int] = SEVERITIES,
                        seed: int = 0, n_resamples: int = 1000,
                        progress: Callable[[str, int], None] | None = None) -> list[Record]:
    """Records of `classifier` on x (N, H, W, 3) under each corruption and severity, and per
    severity their mean over the corruptions (attack MEAN).

    classifier: a DefendedClassifier (logits, and rejected when it has a detector: a rejected
        image counts as a wrong call, as under attack).
    y: (N,) true labels; clean_predictions, clean_scores: (N,) the same model's counted clean
        predictions and malignancy scores, which every change is paired against.
    threshold: the operating threshold on the malignancy score, or None (no op_ figures).
    Each record is record(model, corruption, CORRUPTION, severity, figure, value), figures as
    row_values; a mean row's figures and intervals are the mean over corruptions taken
    resample by resample. progress: called with (corruption, severity) before each.
    """
    check_corruptions(corruptions, severities)
    malignant = malignant_mask(health_map)
    y = np.asarray(y)
    clean = resampled_figures(y, np.asarray(clean_predictions), clean_scores, malignant, threshold,
                              n_resamples=n_resamples, seed=seed)
    records = []
    for severity in severities:
        at_severity = []
        for name in corruptions:
            if progress is not None:
                progress(name, severity)
            predictions, scores = [], []
            for start in range(0, len(x), CHUNK):  # bounded memory at 224 px; the same images as one call
                images = corrupt(x[start:start + CHUNK], name, severity, seed=seed, start=start)
                logits = classifier.logits(images)
                chunk = logits.argmax(axis=1)
                if classifier.can_reject:  # a rejected (or abstained) image counts as a wrong call, as under attack
                    chunk = with_rejection(y[start:start + CHUNK], chunk, classifier.rejected(images), health_map)[0]
                predictions.append(chunk)
                scores.append(malignancy_score(special.softmax(logits.astype(np.float64), axis=1), malignant))
            predictions, scores = np.concatenate(predictions), np.concatenate(scores)
            figures = resampled_figures(y, predictions, scores, malignant, threshold, n_resamples=n_resamples,
                                        seed=seed)
            at_severity.append(figures)
            records += [record(model, name, CORRUPTION, severity, k, v) for k, v in row_values(figures, clean).items()]
        mean = {m: (float(np.mean([f[m][0] for f in at_severity])), np.mean([f[m][1] for f in at_severity], axis=0))
                for m in at_severity[0]}
        records += [record(model, MEAN, CORRUPTION, severity, k, v) for k, v in row_values(mean, clean).items()]
    return records


def corruption_grid(records: Iterable[Record], *, model: str,
                    metric: str) -> tuple[tuple[str, ...], tuple[int, ...], np.ndarray]:
    """(corruptions, severities, values (C, S) float64) of `metric` over `model`'s corruption
    rows (the mean row left out), NaN where a pair was not measured; what the heat map shows.
    Empty tuples and a (0, 0) array without corruption rows."""
    found = {(r["attack"], int(r["eps"])): r["value"] for r in records
             if r["model"] == model and r["threat"] == CORRUPTION and r["metric"] == metric and r["attack"] != MEAN}
    names = tuple(dict.fromkeys(name for name, _ in found))
    severities = tuple(sorted({s for _, s in found}))
    values = np.full((len(names), len(severities)), np.nan)
    for (name, severity), value in found.items():
        values[names.index(name), severities.index(severity)] = value
    return names, severities, values


def worst_corruption(records: Iterable[Record], *, model: str, metric: str, severity: int,
                     worst: Callable = max) -> dict[str, str | float] | None:
    """The corruption whose `metric` is worst at `severity` (max for an error rate, min for
    accuracy), as {"value", "corruption", "ci_low", "ci_high"}; None if no row holds it."""
    values = {}
    for r in records:
        if r["model"] == model and r["threat"] == CORRUPTION and r["attack"] != MEAN and int(r["eps"]) == severity:
            values.setdefault(r["attack"], {})[r["metric"]] = r["value"]
    found = [(v[metric], name) for name, v in values.items() if metric in v and not math.isnan(v[metric])]
    if not found:
        return None
    value, name = worst(found, key=lambda pair: pair[0])
    return {"value": value, "corruption": name, "ci_low": values[name].get(f"{metric}_ci_low", math.nan),
            "ci_high": values[name].get(f"{metric}_ci_high", math.nan)}


def corruption_summary(records: Sequence[Record], *, model: str,
                       severities: Iterable[int]) -> tuple[dict[str, str], dict[str, float]]:
    """({label: text} for a report's summary, {metric: value} for MLflow): per severity the mean
    accuracy over the corruptions and the worst op_fnr (fnr without an operating point), e.g.
    'mean accuracy 0.612 [0.570, 0.650] (change from clean -0.110); worst op_fnr 0.210 [...]
    under defocus_blur' and corruption_worst_3_op_fnr."""
    text, values = {}, {}
    for severity in severities:
        mean = {r["metric"]: r["value"] for r in records if r["model"] == model and r["threat"] == CORRUPTION
                and r["attack"] == MEAN and int(r["eps"]) == severity}
        if not mean:
            continue
        metric = "op_fnr" if "op_fnr" in mean else "fnr"
        worst = worst_corruption(records, model=model, metric=metric, severity=severity)
        text[f"corruptions, severity {severity}"] = (
            f"mean accuracy {mean['accuracy']:.3f} [{mean['accuracy_ci_low']:.3f}, {mean['accuracy_ci_high']:.3f}] "
            f"(change from clean {mean['change_accuracy']:+.3f}); " +
            (f"worst {metric} {worst['value']:.3f} [{worst['ci_low']:.3f}, {worst['ci_high']:.3f}] under "
             f"{worst['corruption']}" if worst else f"{metric} undefined (no cancer among the images)"))
        if worst:
            values[f"corruption_worst_{severity}_{metric}"] = worst["value"]
    return text, values


__all__ = ["MEAN", "corruption_grid", "corruption_summary", "measure_corruptions", "resampled_figures", "row_values",
           "worst_corruption"]
