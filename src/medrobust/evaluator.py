"""`mlflow.models.evaluate(..., evaluators=["medrobust"])`: the evaluate step's measurement of a
model version on a dataset the caller gives, logged into the run MLflow opened.

    mlflow.models.evaluate("models:/medrobust-small_cnn@robust", frame, targets="label",
                           model_type="classifier", evaluators=["medrobust"],
                           evaluator_config={"medrobust": {"suites": ["standard", "health"], "max_images": 200}})

The data: a DataFrame with a `path` column (image files, relative to `image_root` in the
config or $MEDROBUST_IMAGE_ROOT, confined below it as a served version's are) or an `image`
column (base64 JPEG/PNG), or a 2-D array of flattened images (N, S * S * 3) in [0, 1] at the
model's input size (MLflow takes 2-D arrays only); the targets: class names or indices.
evaluator_config: any suite setting of `medrobust evaluate` (suites, eps, max_images,
n_resamples, corruptions, severities, apgd_steps, ...; an unknown key is an error), plus
`image_root` and `threshold` (default: the version's own operating threshold). Registered
under the entry point group `mlflow.model_evaluator` in pyproject.toml.
"""

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import tracking
from .config import ModelStepConfig, SuiteConfig, flatten
from .config.settings import coerce
from .data import CLASSES, class_index, stratified_subset
from .errors import ConfigError, DataError
from .evaluation.corruptions import check_corruptions
from .evaluation.records import MEAN, is_corruption
from .evaluation.shift import corruption_summary
from .models.training import set_seed
from .predict import IMAGE_ROOT_ENV, read_request
from .steps.evaluate import MODEL, measure_and_log, metric_name, suite_conditions
from .steps.evaluate.conditions import corruption_names, wants_corruptions
from .tracking.evaluator import model_evaluator

if TYPE_CHECKING:
    from .defenses.defended import DefendedClassifier

# evaluator_config keys beyond the suite settings; the model, data and run are MLflow's to give
OWN_KEYS = ("image_root", "threshold")
NOT_TAKEN = tuple(f.name for f in fields(ModelStepConfig) if f.name not in ("seed",))


def suite_config(settings: Mapping[str, object],
                 classifier: "DefendedClassifier") -> tuple[SuiteConfig, str | None, float | None]:
    """(SuiteConfig, image_root, threshold) of an evaluator_config; ConfigError naming a key the
    evaluator does not take."""
    settings = dict(settings)
    refused = sorted(k for k in settings if k.split(".")[0] in NOT_TAKEN)
    if refused:
        raise ConfigError(f"evaluator_config takes no {', '.join(refused)}: the model, data and run are "
                          "mlflow.models.evaluate's arguments", refused)
    image_root = settings.pop("image_root", None) or os.environ.get(IMAGE_ROOT_ENV) or None
    threshold = settings.pop("threshold", classifier.info.get("operating_threshold"))
    if threshold is not None:
        threshold = coerce(threshold, float, "threshold")
        if not 0 <= threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1] (a malignancy score), got {threshold!r}", ["threshold"])
    config = SuiteConfig.from_dict(settings)
    health_map = classifier.info.get("operating_health_map", config.data.health_map)
    config = replace(config, data=replace(config.data, image_size=int(classifier.input_shape[0]), health_map=health_map))
    for c in suite_conditions(config, has_surrogate=False)[0]:
        c.check()
    if wants_corruptions(config):
        check_corruptions(corruption_names(config), config.severities)
    return config, image_root, threshold


def labels_of(targets: np.ndarray) -> np.ndarray:
    """(N,) class indices of targets given as class names or indices; DataError naming the row."""
    out = []
    for i, label in enumerate(np.asarray(targets).ravel().tolist()):
        try:
            out.append(int(label) if isinstance(label, (int, np.integer)) or str(label).isdigit() else class_index(label))
        except ConfigError as e:
            raise DataError(f"targets row {i}: {e}") from None
        if not 0 <= out[-1] < len(CLASSES):
            raise DataError(f"targets row {i}: class index {out[-1]} is outside 0..{len(CLASSES) - 1}")
    return np.asarray(out, dtype=np.int64)


def images_of(classifier: "DefendedClassifier", features: pd.DataFrame | np.ndarray,
              image_root: str | None) -> np.ndarray:
    """(N, S, S, 3) float32 of a DataFrame (`path` confined below image_root, or `image`) or of
    a 2-D array of flattened images at the model's input size."""
    if isinstance(features, pd.DataFrame) and ({"path", "image"} & set(features.columns) or
                                               not all(pd.api.types.is_numeric_dtype(t) for t in features.dtypes)):
        return read_request(classifier, features.reset_index(drop=True), image_root)
    shape = tuple(int(s) for s in classifier.input_shape)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != int(np.prod(shape)):
        raise DataError(f"an array of images must be (N, {int(np.prod(shape))}): each row one {shape} image flattened, "
                        f"got shape {x.shape}")
    if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
        raise DataError("array images must be in [0, 1] (divide 8-bit pixels by 255)")
    return x.reshape((-1, *shape))


def meant_for_another(settings: Mapping[str, object]) -> bool:
    """Whether an evaluator_config holds only keys that are no setting of ours: the flat config
    `mlflow.models.evaluate` without `evaluators` hands every evaluator (log_model_explainability
    and the like, for MLflow's own)."""
    ours = {f.name for f in fields(SuiteConfig)} | set(OWN_KEYS)
    return bool(settings) and not any(k.split(".")[0] in ours for k in settings)


def evaluate_dataset(classifier: "DefendedClassifier", features: pd.DataFrame | np.ndarray, targets: np.ndarray,
                     settings: Mapping[str, object]) -> dict[str, float] | None:
    """The evaluate step's measurement of `classifier` on the given images, logged into the
    active run (records, report, metrics, one nested run per row); returns the flat metrics, or
    None (skipped) for a config meant for another evaluator."""
    if meant_for_another(settings):
        return None
    config, image_root, threshold = suite_config(settings, classifier)
    set_seed(config.seed)
    y = labels_of(targets)
    x = images_of(classifier, features, image_root)
    if config.max_images:
        keep = stratified_subset(y, config.max_images, seed=config.seed)
        x, y = x[keep], y[keep]
    notes = suite_conditions(config, has_surrogate=False)[1]
    summary = {"model": classifier.info.get("model_uri", "given to mlflow.models.evaluate"),
               "data": "given to mlflow.models.evaluate",
               "operating threshold": "none" if threshold is None else f"{threshold:.4f}"}
    tracking.log_params({f"medrobust.{k}": v for k, v in flatten(config).items() if k.split(".")[0] not in NOT_TAKEN})
    records, worst = measure_and_log(classifier, x, y, config=config, threshold=threshold, notes=notes, summary=summary,
                                     title="medrobust evaluate (mlflow.models.evaluate)")
    # what measure_and_log logged to MLflow: a corruption's own figures stay in records.csv
    metrics = {metric_name(r): r["value"] for r in records if r["model"] == MODEL and np.isfinite(r["value"])
               and (not is_corruption(r) or r["attack"] == MEAN)}
    metrics |= {k: v for k, v in corruption_summary(records, model=MODEL, severities=config.severities)[1].items()
                if np.isfinite(v)}
    return metrics | {f"worst_{k}": v["value"] for k, v in worst.items() if np.isfinite(v["value"])}


MedrobustEvaluator = model_evaluator(evaluate_dataset)

__all__ = ["MedrobustEvaluator", "evaluate_dataset", "images_of", "labels_of", "suite_config"]
