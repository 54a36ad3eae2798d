"""The measured records of one model on its images, and how they are logged: intervals and
the operating point per row, the natural corruptions, metric names, one nested run per row,
the report's figures, and `measure_and_log`, which evaluate and the MLflow evaluator share."""

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ... import plots, tracking
from ...config import SuiteConfig
from ...data import CLASSES, N_CLASSES, malignant_mask, stratified_subset
from ...evaluation import Evaluation, Record, interval_summary, measure, record, records_csv
from ...evaluation.adaptive import joint_pgd
from ...evaluation.intervals import paired_difference
from ...evaluation.operating_point import malignancy_score, operating_summary, roc
from ...evaluation.certified import certified_curve, measure_certified
from ...evaluation.records import CERTIFIED, CORRUPTION, MEAN, is_corruption, measured_apart
from ...evaluation.report import condition_label, format_eps, headline, render_html, rows, security_curves
from ...evaluation.shift import corruption_grid, corruption_summary, measure_corruptions
from ...evaluation.suite import add_measurement, ensembles, per_image_csv
from .conditions import MODEL, SURROGATE, corruption_names, suite_conditions, wants_corruptions

if TYPE_CHECKING:
    from ...defenses import DefendedClassifier

log = logging.getLogger(__name__)

PER_IMAGE = "report/per_image.csv"  # per image: the counted predictions a paired comparison needs


def corrupted_records(model: "DefendedClassifier", x: np.ndarray, y: np.ndarray, evaluation: Evaluation,
                      threshold: float | None, config: SuiteConfig) -> list[Record]:
    """The natural corruptions' records (evaluation/corruptions.py): the model on x under each
    corruption and severity, paired against its own clean row of `evaluation`."""
    clean = evaluation.get(MODEL)
    names = corruption_names(config)
    log.info("corruptions: %d corruptions x severities %s, %d images each", len(names),
             ",".join(map(str, config.severities)), len(x))
    return measure_corruptions(model, x, y, clean.strict, clean.scores, threshold=threshold, model=MODEL,
                               health_map=config.data.health_map, corruptions=names, severities=config.severities,
                               seed=config.seed, n_resamples=config.n_resamples,
                               progress=lambda name, severity: log.debug("corruption %s, severity %d", name, severity))


def certified_records(model: "DefendedClassifier", x: np.ndarray, y: np.ndarray, config: SuiteConfig,
                      notes: list[str]) -> list[Record]:
    """Randomized smoothing's certificate (evaluation/certified.py) on a class-stratified sample
    of certify_images of the measured images, at the model's own noise or certify_sigma."""
    own = (model.smoothing or {}).get("sigma")
    sigma = config.certify_sigma or own or 0.25
    if own is None:
        notes.append(f"certified: the model answers without smoothing; its smoothed version at sigma {sigma:g} is "
                     "certified (a network not trained under noise certifies little: defend it with `smoothing`)")
    keep = stratified_subset(y, min(config.certify_images, len(y)), seed=config.seed)
    log.info("certified: %d images, sigma %g, %d samples each", len(keep), sigma, config.certify_samples)
    records, _ = measure_certified(model, x[keep], y[keep], sigma=sigma, n=config.certify_samples,
                                   n0=max(10, config.certify_samples // 10), alpha=config.certify_alpha, model=MODEL,
                                   health_map=config.data.health_map, seed=config.seed, n_resamples=config.n_resamples,
                                   attack_steps=config.pgd_steps)
    return records


def with_intervals_and_operating_point(evaluation: Evaluation, y: np.ndarray, malignant: np.ndarray,
                                       threshold: float | None, config: SuiteConfig) -> list[Record]:
    """The records of an Evaluation plus, per measurement, 95 % bootstrap intervals and the
    health figures at the operating threshold (on the per-image worst malignancy scores: op_fnr
    is the share of cancers the suite gets below the threshold, 1 - op_specificity the share of
    benign lesions it gets above it); and, where the surrogate is the measured model's parent,
    the paired differences of the clean row (`paired_records`)."""
    out = list(evaluation.records)
    is_malignant = malignant[y]
    for m in evaluation.measurements:
        extra = interval_summary(y, m.counted, malignant, n_resamples=config.n_resamples, seed=config.seed)
        extra = {k: v for k, v in extra.items() if k.endswith(("_ci_low", "_ci_high"))}
        if threshold is not None and m.model == MODEL:  # the threshold is the measured model's own
            extra |= operating_summary(m.scores, is_malignant, threshold, n_resamples=config.n_resamples,
                                       seed=config.seed)
        out += [record(m.model, m.attack, m.threat, m.eps, k, v) for k, v in extra.items()]
    return out + paired_records(evaluation, malignant, config)


def paired_records(evaluation: Evaluation, malignant: np.ndarray, config: SuiteConfig) -> list[Record]:
    """delta_<figure> records (with _ci_low, _ci_high) on the measured model's clean row: its
    figure minus the surrogate's on the same images, with the paired bootstrap interval
    (intervals.paired_difference). Not on the ensemble rows: here the surrogate faces only the
    attacks crafted on it, not the suite, so its ensemble is no like-for-like comparison; the
    `report` step pairs each defended model's ensemble with its parent's own evaluate run on the
    same images (report/per_image.csv). [] without a surrogate."""
    out = []
    ours = [m for m in evaluation.measurements if m.model == MODEL and m.threat == "clean"]
    for m in ours:
        parent = next((p for p in evaluation.measurements if p.model == SURROGATE
                       and (p.attack, p.threat, p.eps) == (m.attack, m.threat, m.eps)), None)
        if parent is None:
            continue
        delta = paired_difference(evaluation.y_true, m.counted, parent.counted, malignant,
                                  n_resamples=config.n_resamples, seed=config.seed)
        out += [record(MODEL, m.attack, m.threat, m.eps, k, v) for k, v in delta.items()]
    return out


def joint_attack(model: "DefendedClassifier", x: np.ndarray, y: np.ndarray, evaluation: Evaluation,
                 config: SuiteConfig) -> None:
    """PGD on classifier and detector at once (the image must fool one and pass the other) on
    the true labels, added to `evaluation` as a row counted like every other (rejections
    strictly, the per-image worst of clean and attacked) and so part of the ensemble."""
    started = time.perf_counter()
    log.info("adaptive: joint pgd on the classifier and its detector (white-box), %d images", len(x))
    x_adv = joint_pgd(model.as_keras(), model.detector, x, y=y, eps=config.eps, steps=config.pgd_steps,
                      threshold=model.threshold, seed=config.seed)
    add_measurement(evaluation.measurements, y, MODEL, model, "joint_pgd", "whitebox", config.eps, x_adv,
                    health_map=config.data.health_map, started=started)


def metric_name(r: Record) -> str:
    """The flat MLflow name of a record: clean_<metric>, or <attack>_<threat>_<eps>_<metric> with
    eps in /255 units (pgd_whitebox_8_accuracy), corruption_<name>_<severity>_<metric> for a
    natural corruption (corruption_mean_3_accuracy); the surrogate's rows start with surrogate_."""
    if r["threat"] == "clean":
        head = "clean"
    elif r["threat"] == CORRUPTION:
        head = f"corruption_{r['attack']}_{r['eps']:g}"
    elif r["threat"] == CERTIFIED:
        head = f"certified_{r['eps']:g}"
    else:
        eps = r["eps"] * 255
        head = f"{r['attack']}_{r['threat']}_{eps:g}" if abs(eps - round(eps)) < 1e-6 else \
            f"{r['attack']}_{r['threat']}_{r['eps']:.4f}"
    return (f"{r['model']}_" if r["model"] != MODEL else "") + f"{head}_{r['metric']}"


def _measurement(evaluation, row):
    """The Measurement of the measured model behind a report row, or None (health, joint rows)."""
    return next((m for m in evaluation.measurements if m.model == MODEL and
                 (m.attack, m.threat, m.eps) == (row["attack"], row["threat"], row["eps"])), None)


def _figures(records, roc_curve, evaluation, worst, x):
    """{caption: PNG}: security curves, ROC, the confusion matrices of the clean row and of
    each headline row, and adversarial examples of the attacked row with the lowest accuracy."""
    out = {}
    for metric in ("accuracy", "fnr"):
        curves = {a: c for a, c in security_curves(records, model=MODEL, metric=metric).items() if len(c[0]) > 2}
        if curves:
            fig = plots.security_curve_figure(curves, metric, f"{metric} against the budget (white-box)")
            out[f"security curve: {metric}"] = plots.figure_png(fig)
    if roc_curve is not None:
        fpr, tpr, _, auc = roc_curve
        out["ROC, malignant against benign (clean)"] = plots.figure_png(plots.roc_figure(fpr, tpr, auc, "clean"))
    clean = evaluation.get(MODEL)
    for m in [clean] + [_measurement(evaluation, w) for w in worst.values() if w["attack"] is not None]:
        label = None if m is None else condition_label(m.attack, m.threat, m.eps)
        if label is not None and f"confusion: {label}" not in out:
            out[f"confusion: {label}"] = plots.figure_png(plots.confusion_matrix_figure(m.confusion, CLASSES, label))
    for metric in ("accuracy", "op_fnr"):  # the heat maps, corruption x severity, against the clean row's figure
        names, severities, values = corruption_grid(records, model=MODEL, metric=metric)
        if len(names):
            clean_row = next(r for r in rows(records, model=MODEL) if r["threat"] == "clean")
            fig = plots.heatmap_figure(values, names, severities, f"{metric} under natural corruptions", xlabel="severity",
                                       reference=clean_row.get(metric), colorbar=metric)
            out[f"corruptions: {metric}"] = plots.figure_png(fig)
    curves = {m: certified_curve(records, model=MODEL, metric=m) for m in ("certified_accuracy", "certified_fnr",
                                                                             "empirical_accuracy")}
    if len(curves["certified_accuracy"][0]):
        fig = plots.certified_figure(curves, "randomized smoothing: certified against L2 PGD")
        out["certified: accuracy and FNR against the L2 radius"] = plots.figure_png(fig)
    attacked = [m for m in evaluation.measurements if m.model == MODEL and m.examples is not None]
    if attacked:
        m = min(attacked, key=lambda m: m.values["accuracy"])
        n = len(m.examples)
        fig = plots.examples_figure(x[:n], m.examples, evaluation.y_true[:n], clean.predictions[:n],
                                    m.predictions[:n], CLASSES, m.eps)
        out[f"examples: {condition_label(m.attack, m.threat, m.eps)}"] = plots.figure_png(fig)
    return out


def log_rows(records: Sequence[Record], experiment: str) -> None:
    """One nested run per report row (condition of the measured model), named by its condition,
    holding that row's figures without prefix, so the MLflow UI compares rows side by side."""
    for row in rows(records, model=MODEL):
        if measured_apart(row):  # corruptions and certificates: the report's tables and figures hold them
            continue
        tags = {"medrobust.step": "evaluate-row", "medrobust.attack": row["attack"],
                "medrobust.threat": row["threat"], "medrobust.eps": format_eps(row["eps"])}
        with tracking.run(experiment, run_name=condition_label(row["attack"], row["threat"], row["eps"]), tags=tags):
            tracking.log_metrics({k: float(v) for k, v in row.items() if k not in ("attack", "threat", "eps")
                                  and isinstance(v, (int, float)) and np.isfinite(v)})


def measure_and_log(model: "DefendedClassifier", x: np.ndarray, y: np.ndarray, *, config: SuiteConfig,
                    threshold: float | None, surrogate: "DefendedClassifier | None" = None,
                    notes: list[str] | None = None, ids: np.ndarray | None = None,
                    summary: Mapping[str, str] | None = None,
                    title: str = "") -> tuple[list[Record], dict[str, dict[str, str | float | None]]]:
    """Measure `model` (a DefendedClassifier) on x (N, H, W, 3) float32 in [0, 1] with true
    labels y (N,) under config's suites (a SuiteConfig) and log everything into the active run:
    the metrics (flat names, metric_name), one nested run per row, report/records.csv,
    report/per_image.csv (when `ids`, the images' ids, are given), report/report.html and
    report/headline.json. threshold: the operating point, or None; surrogate: the model transfer
    attacks are crafted on; summary: {label: text} heading the report. Returns (records, headline)."""
    notes = [] if notes is None else notes  # what the suites could not do as asked; the caller's list grows
    conditions, _ = suite_conditions(config, surrogate is not None)
    malignant = malignant_mask(config.data.health_map)
    log.info("evaluate: %d images, %d conditions%s", len(x), len(conditions),
             f", operating threshold {threshold:.4f}" if threshold is not None else "")
    evaluation = measure(model, x, y, conditions, surrogate=surrogate, health_map=config.data.health_map,
                         seed=config.seed, names=(MODEL, SURROGATE), ensemble=False)
    if ("adaptive" in config.suites or "full" in config.suites) and model.detector is not None:
        joint_attack(model, x, y, evaluation, config)
    evaluation.measurements += ensembles(evaluation)
    records = with_intervals_and_operating_point(evaluation, y, malignant, threshold, config)
    if wants_corruptions(config):
        records += corrupted_records(model, x, y, evaluation, threshold, config)
    if "certified" in config.suites:
        records += certified_records(model, x, y, config, notes)
    clean = evaluation.get(MODEL)
    roc_curve = roc(malignancy_score(clean.probabilities, malignant), malignant[y])
    records.append(record(MODEL, "none", "clean", 0.0, "roc_auc", roc_curve[3]))
    # a corruption's own figures stay in records.csv and the report; MLflow gets their mean per severity
    tracking.log_metrics({metric_name(r): r["value"] for r in records if np.isfinite(r["value"])
                          and (not is_corruption(r) or r["attack"] == MEAN)})
    corrupted_text, corrupted_values = corruption_summary(records, model=MODEL, severities=config.severities)
    tracking.log_metrics({k: v for k, v in corrupted_values.items() if np.isfinite(v)})
    if threshold is not None:
        tracking.log_metrics({"operating_threshold": threshold})
    worst = headline(records, model=MODEL)
    log_rows(records, config.experiment)
    tracking.log_metrics({f"worst_{k}": v["value"] for k, v in worst.items() if np.isfinite(v["value"])})
    counts = np.bincount(y, minlength=N_CLASSES)
    summary = dict(summary or {}) | {"images": str(len(y)),
                                     "class counts": ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts)),
                                     **corrupted_text, **{f"note {i + 1}": n for i, n in enumerate(notes)}}
    page = render_html(title=title, summary=summary, records=records, model=MODEL,
                       figures=_figures(records, roc_curve, evaluation, worst, x))
    tracking.log_text(records_csv(records), "report/records.csv")
    if ids is not None:
        tracking.log_text(per_image_csv(ids, y, evaluation, MODEL), PER_IMAGE)
    tracking.log_text(page, "report/report.html")
    tracking.log_json({k: dict(v) for k, v in worst.items()}, "report/headline.json")
    return records, worst
