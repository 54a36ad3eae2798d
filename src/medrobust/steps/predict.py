"""The `predict` command: image files in, one CSV row per image out (no MLflow run)."""

import logging
import sys
from dataclasses import dataclass

import pandas as pd

from .. import tracking
from ..config import PredictConfig
from ..predict import predict_files

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    frame: pd.DataFrame  # one row per image (medrobust.predict.predict_frame)
    output: str  # where the CSV went; - is standard output


def run_predict(config: PredictConfig) -> PredictResult:
    """Predict every image of config.inputs with the model at config.model_uri, defense applied."""
    classifier = tracking.load_classifier(config.model_uri)
    threshold = config.threshold
    if threshold is None:
        # The version's tag (the latest train, defend or evaluate run that chose one on this model's
        # own data), else what the version carries; only for the same health map.
        tags = tracking.model_version_tags(config.model_uri)
        for found in (tags, classifier.info):
            if "operating_threshold" in found and found.get("operating_health_map", config.health_map) == config.health_map:
                threshold = float(found["operating_threshold"])
                log.info("predict: operating threshold %.4f from %s (set by run %s)", threshold, config.model_uri,
                         found.get("operating_point_run", "defend"))
                break
    frame = predict_files(classifier, config.inputs, config.health_map, threshold)
    frame.to_csv(sys.stdout if config.output == "-" else config.output, index=False)
    if config.output != "-":
        called = (f"{int(frame['malignant_at_threshold'].sum())} malignant at the threshold"
                  if "malignant_at_threshold" in frame else "no operating threshold")
        log.info("predict: %d images, %s, written to %s", len(frame), called, config.output)
    return PredictResult(frame, config.output)
