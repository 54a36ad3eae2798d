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
    threshold = config.threshold
    tags = tracking.model_version_tags(config.model_uri) if threshold is None else {}
    if "operating_threshold" in tags and tags.get("operating_health_map", config.health_map) == config.health_map:
        threshold = float(tags["operating_threshold"])
        log.info("predict: operating threshold %.4f from %s (set by evaluate run %s)", threshold, config.model_uri,
                 tags.get("operating_point_run", "?"))
    frame = predict_files(tracking.load_classifier(config.model_uri), config.inputs, config.health_map, threshold)
    frame.to_csv(sys.stdout if config.output == "-" else config.output, index=False)
    if config.output != "-":
        log.info("predict: %d images, %d called malignant, written to %s", len(frame), int(frame["malignant"].sum()),
                 config.output)
    return PredictResult(frame, config.output)
