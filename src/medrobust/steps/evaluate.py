"""The `evaluate` step: a model URI (plain or defended) and attack suites in, a robustness
report out: one row per (attack, eps, threat model) with every figure, its 95 % bootstrap
interval and the health figures at the clinical operating point; per budget the ensemble row,
the per-image worst case over the suite (evaluation/worst.py), which the headline reads; and
for a defended model, its paired difference to its undefended parent on the same images.
Logged as metrics, a CSV and one self-contained HTML page."""

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from .. import attacks, plots, tracking
from ..config import EvaluateConfig, flatten
from ..data import CLASSES, N_CLASSES, image_ids, images, load_dataset, malignant_mask
from ..errors import ModelError
from ..evaluation.adaptive import adaptive_notes, joint_pgd
from ..evaluation.corruptions import CORRUPTIONS, check_corruptions
from ..evaluation.shift import MEAN, corruption_grid, corruption_summary, measure_corruptions
from ..evaluation import Condition, interval_summary, measure, record, records_csv
from ..evaluation.intervals import paired_difference
from ..evaluation.records import CORRUPTION, is_corruption, per_image_csv
from ..evaluation.operating_point import malignancy_score, operating_summary, roc, threshold_for_sensitivity
from ..evaluation.report import condition_label, format_eps, headline, headline_text, render_html, rows, security_curves
from ..evaluation.suite import add_measurement, ensembles, softmax
from ..models.training import set_seed
from .lineage import check_unseen

log = logging.getLogger(__name__)

MODEL, SURROGATE = "target", "surrogate"  # the names of the two models in the records
PER_IMAGE = "report/per_image.csv"  # per image: the counted predictions a paired comparison needs


@dataclass
class EvaluateResult:
    run_id: str
    records: list  # long format: {model, attack, threat, eps, metric, value}
    headline: dict  # {metric: {value, attack, threat, eps, ci_low, ci_high}}: the worst ensemble row
    threshold: float | None  # the operating point on the malignancy score
    notes: list  # what the suite could not do as asked, and why


def attack_params(config, method):
    """The step-level settings of an attack (each attack gets only what it takes)."""
    return {"pgd": {"steps": config.pgd_steps, "random_start": True}, "cw_pgd": {"steps": config.cw_steps},
            "uap_fast": {"max_steps": config.uap_max_steps}, "uap": {"uap_max_iter": config.uap_max_iter},
            "apgd": {"steps": config.apgd_steps}, "apgd_t": {"steps": config.apgd_steps, "n_targets": config.apgd_targets},
            "square": {"queries": config.square_queries},
            "autoattack": {"steps": config.apgd_steps, "n_targets": config.apgd_targets,
                           "queries": config.square_queries},
            "health": {"steps": config.apgd_steps, "restarts": config.health_restarts,
                       "health_map": config.data.health_map}}.get(method, {})


def suite_conditions(config, has_surrogate):
    """(conditions, notes): the Conditions of config.suites in order, without repeats; a
    transfer condition without a surrogate runs white-box instead, and a note says so."""
    wanted, notes = [], []

    def add(method, eps, threat):
        if threat == "transfer" and not has_surrogate:
            threat = "whitebox"
            note = "no surrogate (a plain model has no parent; give --attack-model-uri): transfer attacks run white-box"
            if note not in notes:
                notes.append(note)
        wanted.append(Condition(method, float(eps), threat, "inf", attack_params(config, method)))

    for name in config.suites:
        if name in ("thesis", "full"):
            for method in ("fgsm", "uap", "uap_fast"):
                add(method, config.eps, "transfer")
        if name in ("standard", "full"):  # AutoAttack white-box only: its Square queries the target itself
            for method in ("fgsm", "pgd", "autoattack"):
                add(method, config.eps, "whitebox")
            for method in ("fgsm", "pgd"):
                add(method, config.eps, "transfer")
        if name in ("adaptive", "full"):  # white-box through the whole defense (BPDA); the joint attack aside
            for method in ("fgsm", "pgd", "apgd"):
                add(method, config.eps, "whitebox")
        if name == "autoattack":
            add("autoattack", config.eps, "whitebox")
        if name in ("health", "full"):
            add("health", config.eps, "whitebox")
        if name == "full":
            for method in config.curve_attacks:
                for eps in config.curve_eps:
                    if eps > 0:  # the clean row is every curve's first point
                        add(method, eps, "whitebox")
    unique = []
    for c in wanted:
        if all((c.attack, c.eps, c.threat) != (u.attack, u.eps, u.threat) for u in unique):
            unique.append(c)
    return tuple(unique), notes


def wants_corruptions(config):
    return "corruptions" in config.suites or "full" in config.suites


def corruption_names(config):
    """The corruptions measured: config.corruptions, or every one when none is named."""
    return config.corruptions or tuple(CORRUPTIONS)


def corrupted_records(model, x, y, evaluation, threshold, config):
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


def check_request(config):
    """Every check before any work: (conditions, notes, model, surrogate or None)."""
    for method in config.curve_attacks:
        attacks.check_attack(method, max(config.curve_eps), "inf")
    model = tracking.load_classifier(config.model_uri)
    if model.n_classes != N_CLASSES or len(model.input_shape) != 3:
        raise ModelError(f"{config.model_uri} outputs {model.n_classes} classes for inputs {model.input_shape}; the "
                         f"data has the {N_CLASSES} classes {', '.join(CLASSES)}")
    surrogate_uri = config.attack_model_uri or model.info.get("parent_model_uri")
    surrogate = tracking.load_classifier(surrogate_uri) if surrogate_uri else None
    if surrogate is not None and (surrogate.input_shape != model.input_shape or surrogate.n_classes != model.n_classes):
        raise ModelError(f"surrogate {surrogate_uri} takes {surrogate.input_shape} and outputs {surrogate.n_classes} "
                         f"classes; {config.model_uri} takes {model.input_shape} and outputs {model.n_classes}")
    conditions, notes = suite_conditions(config, surrogate is not None)
    if "adaptive" in config.suites or "full" in config.suites:
        notes += adaptive_notes(model)
    if wants_corruptions(config):
        check_corruptions(corruption_names(config), config.severities)
    for c in conditions:
        c.check()
    if config.split == "all" and config.threshold is None:
        notes.append("--split all has no validation split to choose the operating point on, and no --threshold was "
                     "given: the report has no operating-point figures")
    return conditions, notes, model, surrogate


def operating_threshold(config, model, data, malignant):
    """The malignancy threshold: given, or chosen on the validation split for the target sensitivity."""
    if config.threshold is not None:
        return config.threshold
    if config.split == "all":
        return None
    scores = malignancy_score(softmax(model.logits(data.x["val"])), malignant)
    return threshold_for_sensitivity(scores, malignant[data.y["val"]], target=config.target_sensitivity)


def with_intervals_and_operating_point(evaluation, y, malignant, threshold, config):
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


def paired_records(evaluation, malignant, config):
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


def joint_attack(model, x, y, evaluation, config):
    """PGD on classifier and detector at once (the image must fool one and pass the other) on
    the true labels, added to `evaluation` as a row counted like every other (rejections
    strictly, the per-image worst of clean and attacked) and so part of the ensemble."""
    started = time.perf_counter()
    log.info("adaptive: joint pgd on the classifier and its detector (white-box), %d images", len(x))
    x_adv = joint_pgd(model.as_keras(), model.detector, x, y=y, eps=config.eps, steps=config.pgd_steps,
                      threshold=model.threshold, seed=config.seed)
    add_measurement(evaluation.measurements, y, MODEL, model, "joint_pgd", "whitebox", config.eps, x_adv,
                    health_map=config.data.health_map, started=started)


def metric_name(r):
    """The flat MLflow name of a record: clean_<metric>, or <attack>_<threat>_<eps>_<metric> with
    eps in /255 units (pgd_whitebox_8_accuracy), corruption_<name>_<severity>_<metric> for a
    natural corruption (corruption_mean_3_accuracy); the surrogate's rows start with surrogate_."""
    if r["threat"] == "clean":
        head = "clean"
    elif r["threat"] == CORRUPTION:
        head = f"corruption_{r['attack']}_{r['eps']:g}"
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
            fig = plots.heatmap_figure(values, names, severities, f"{metric} under natural corruptions", xlabel="severity",
                                       reference=rows(records, model=MODEL)[0][metric], colorbar=metric)
            out[f"corruptions: {metric}"] = plots.figure_png(fig)
    attacked = [m for m in evaluation.measurements if m.model == MODEL and m.examples is not None]
    if attacked:
        m = min(attacked, key=lambda m: m.values["accuracy"])
        n = len(m.examples)
        fig = plots.examples_figure(x[:n], m.examples, evaluation.y_true[:n], clean.predictions[:n],
                                    m.predictions[:n], CLASSES, m.eps)
        out[f"examples: {condition_label(m.attack, m.threat, m.eps)}"] = plots.figure_png(fig)
    return out


def log_rows(records, experiment):
    """One nested run per report row (condition of the measured model), named by its condition,
    holding that row's figures without prefix, so the MLflow UI compares rows side by side."""
    for row in rows(records, model=MODEL):
        if is_corruption(row):  # 70 of them: the report's table and heat map hold them, records.csv each figure
            continue
        tags = {"medrobust.step": "evaluate-row", "medrobust.attack": row["attack"],
                "medrobust.threat": row["threat"], "medrobust.eps": format_eps(row["eps"])}
        with tracking.run(experiment, run_name=condition_label(row["attack"], row["threat"], row["eps"]), tags=tags):
            tracking.log_metrics({k: float(v) for k, v in row.items() if k not in ("attack", "threat", "eps")
                                  and isinstance(v, (int, float)) and np.isfinite(v)})


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Measure the model at config.model_uri under config.suites; log the report; see EvaluateResult."""
    conditions, notes, model, surrogate = check_request(config)
    config = replace(config, data=replace(config.data, image_size=int(model.input_shape[0])))
    tags = {"medrobust.step": "evaluate", "medrobust.suites": ",".join(config.suites),
            "medrobust.defense": model.info.get("spec", "none"), "medrobust.model_uri": config.model_uri,
            "medrobust.model_version": tracking.pinned_uri(config.model_uri),
            "medrobust.parent_model_uri": model.info.get("parent_model_uri") or "none"}
    name = config.run_name or f"evaluate-{'+'.join(config.suites)}"
    with tracking.run(config.experiment, run_name=name, tags=tags) as run_id:
        tracking.log_params(flatten(config))
        set_seed(config.seed)
        data = load_dataset(config.data, whole=config.split == "all")
        check_unseen(config.model_uri, data, config.split)  # no image the model trained on is measured
        tracking.log_dataset(data, context=config.split)
        malignant = malignant_mask(config.data.health_map)
        threshold = operating_threshold(config, model, data, malignant)
        x, y = images(data, config.split, config.max_images, config.seed)
        log.info("evaluate: %d %s images, %d conditions%s", len(x), config.split, len(conditions),
                 f", operating threshold {threshold:.4f}" if threshold is not None else "")
        evaluation = measure(model, x, y, conditions, surrogate=surrogate, health_map=config.data.health_map,
                             seed=config.seed, names=(MODEL, SURROGATE), ensemble=False)
        if ("adaptive" in config.suites or "full" in config.suites) and model.detector is not None:
            joint_attack(model, x, y, evaluation, config)
        evaluation.measurements += ensembles(evaluation)
        records = with_intervals_and_operating_point(evaluation, y, malignant, threshold, config)
        if wants_corruptions(config):
            records += corrupted_records(model, x, y, evaluation, threshold, config)
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
        if threshold is not None and config.threshold is None:
            # Stored with the model, so that predict makes the same health call; only when chosen
            # on the validation split of the very data the version was trained on.
            trained_on = tracking.model_version_tags(config.model_uri).get("data_fingerprint")
            if trained_on == data.fingerprint:
                tracking.tag_model_version(config.model_uri, {
                    "operating_threshold": f"{threshold:.6f}", "operating_target_sensitivity": config.target_sensitivity,
                    "operating_health_map": config.data.health_map, "operating_point_run": run_id})
            else:
                notes.append(f"the operating threshold is logged on this run only: {config.model_uri} is no registered "
                             "version trained on this data")
        worst = headline(records, model=MODEL)
        log_rows(records, config.experiment)
        tracking.log_metrics({f"worst_{k}": v["value"] for k, v in worst.items() if np.isfinite(v["value"])})
        counts = np.bincount(y, minlength=N_CLASSES)
        summary = {"model": config.model_uri, "data": f"{data.source} ({data.layout}), split {config.split}",
                   "fingerprint": data.fingerprint, "images": str(len(y)),
                   "class counts": ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts)),
                   "operating threshold": "none" if threshold is None else
                   f"{threshold:.4f} (malignancy score; target sensitivity {config.target_sensitivity:g} on the "
                   f"validation split)" if config.threshold is None else f"{threshold:.4f} (given)",
                   "surrogate": config.attack_model_uri or model.info.get("parent_model_uri") or "none",
                   **corrupted_text,
                   **{f"note {i + 1}": n for i, n in enumerate(notes)}}
        page = render_html(title=f"medrobust evaluate: {config.model_uri}", summary=summary, records=records,
                           model=MODEL, figures=_figures(records, roc_curve, evaluation, worst, x))
        tracking.log_text(records_csv(records), "report/records.csv")
        tracking.log_text(per_image_csv(image_ids(data, config.split, config.max_images, config.seed), y, evaluation, MODEL),
                          PER_IMAGE)
        tracking.log_text(page, "report/report.html")
        tracking.log_json({k: dict(v) for k, v in worst.items()}, "report/headline.json")
    for note in notes:
        log.warning("evaluate: %s", note)
    log.info("evaluate %s: run %s, %d rows\n%s", "+".join(config.suites), run_id, len(rows(records, model=MODEL)),
             "\n".join(headline_text(worst)))
    return EvaluateResult(run_id, records, worst, threshold, notes)


__all__ = ["EvaluateResult", "run_evaluate", "suite_conditions"]
