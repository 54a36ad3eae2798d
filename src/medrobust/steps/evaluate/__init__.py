"""The `evaluate` step: a model URI (plain or defended) and attack suites in, a robustness
report out: one row per (attack, eps, threat model) with every figure, its 95 % bootstrap
interval and the health figures at the clinical operating point; per budget the ensemble row,
the per-image worst case over the suite (evaluation/worst.py), which the headline reads; for a
defended model, its paired difference to its undefended parent on the same images; and with
the corruptions suite, the model under natural shift. Logged as metrics, a CSV and one
self-contained HTML page.

conditions.py says what a request measures and checks it; measured.py measures and logs
(`measure_and_log`, shared with the MLflow evaluator, medrobust/evaluator.py)."""

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ... import tracking
from ...config import EvaluateConfig, flatten
from ...data import Dataset, image_ids, images, load_dataset, malignant_mask
from ...evaluation.operating_point import malignancy_score, threshold_for_sensitivity
from ...evaluation.report import headline_text, rows
from ...evaluation.suite import softmax
from ...models.training import set_seed
from ..lineage import check_unseen
from .conditions import MODEL, SURROGATE, attack_params, check_request, suite_conditions
from .measured import PER_IMAGE, measure_and_log, metric_name

if TYPE_CHECKING:
    from ...defenses import DefendedClassifier

log = logging.getLogger(__name__)


@dataclass
class EvaluateResult:
    run_id: str
    records: list  # long format: {model, attack, threat, eps, metric, value}
    headline: dict  # {metric: {value, attack, threat, eps, ci_low, ci_high}}: the worst ensemble row
    threshold: float | None  # the operating point on the malignancy score
    notes: list  # what the suite could not do as asked, and why


def operating_threshold(config: EvaluateConfig, model: "DefendedClassifier", data: Dataset,
                        malignant: np.ndarray) -> float | None:
    """The malignancy threshold: given, or chosen on the validation split for the target sensitivity."""
    if config.threshold is not None:
        return config.threshold
    if config.split == "all":
        return None
    scores = malignancy_score(softmax(model.logits(data.x["val"])), malignant)
    return threshold_for_sensitivity(scores, malignant[data.y["val"]], target=config.target_sensitivity)


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Measure the model at config.model_uri under config.suites; log the report; see EvaluateResult."""
    _, notes, model, surrogate = check_request(config)
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
        threshold = operating_threshold(config, model, data, malignant_mask(config.data.health_map))
        # Stored with the model after the measurement, so that predict makes the same health call;
        # only when chosen on the validation split of the very data the version was trained on.
        store_threshold = threshold is not None and config.threshold is None and \
            tracking.model_version_tags(config.model_uri).get("data_fingerprint") == data.fingerprint
        if threshold is not None and config.threshold is None and not store_threshold:
            notes.append(f"the operating threshold is logged on this run only: {config.model_uri} is no registered "
                         "version trained on this data")
        x, y = images(data, config.split, config.max_images, config.seed)
        summary = {"model": config.model_uri, "data": f"{data.source} ({data.layout}), split {config.split}",
                   "fingerprint": data.fingerprint,
                   "operating threshold": "none" if threshold is None else
                   f"{threshold:.4f} (malignancy score; target sensitivity {config.target_sensitivity:g} on the "
                   f"validation split)" if config.threshold is None else f"{threshold:.4f} (given)",
                   "surrogate": config.attack_model_uri or model.info.get("parent_model_uri") or "none"}
        records, worst = measure_and_log(model, x, y, config=config, threshold=threshold, surrogate=surrogate,
                                         notes=notes, summary=summary, title=f"medrobust evaluate: {config.model_uri}",
                                         ids=image_ids(data, config.split, config.max_images, config.seed))
        if store_threshold:
            tracking.tag_model_version(config.model_uri, {
                "operating_threshold": f"{threshold:.6f}", "operating_target_sensitivity": config.target_sensitivity,
                "operating_health_map": config.data.health_map, "operating_point_run": run_id})
    for note in notes:
        log.warning("evaluate: %s", note)
    log.info("evaluate %s: run %s, %d rows\n%s", "+".join(config.suites), run_id, len(rows(records, model=MODEL)),
             "\n".join(headline_text(worst)))
    return EvaluateResult(run_id, records, worst, threshold, notes)


__all__ = ["EvaluateResult", "MODEL", "PER_IMAGE", "SURROGATE", "attack_params", "measure_and_log", "metric_name",
           "operating_threshold", "run_evaluate", "suite_conditions"]
