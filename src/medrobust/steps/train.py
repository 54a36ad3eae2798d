"""The `train` step: data -> trained network -> MLflow run + registered model version (@baseline)."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import plots, tracking
from ..config import TrainConfig, flatten
from ..data import N_CLASSES, Dataset, load_dataset
from ..defenses import DefendedClassifier
from ..models.training import distribution_scope, fit, predict_logits, set_seed
from ..models.zoo import create_model
from .logbook import log_evaluation, operating_point

log = logging.getLogger(__name__)

# Keras' names per epoch -> ours (train_ / val_ prefixes make the MLflow charts readable).
EPOCH_METRICS = {"loss": "train_loss", "accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy", "val_macro_recall": "val_macro_recall"}
# The figures a registered version carries as tags, so the registry shows why it exists.
VERSION_TAGS = ("clean_accuracy", "clean_macro_recall", "clean_macro_specificity", "clean_fnr", "clean_npv")


@dataclass
class TrainResult:
    run_id: str
    model_uri: str  # runs:/<run_id>/model
    registered_name: str | None
    version: int | None
    metrics: dict
    alias: str | None = None  # the registry alias pointing at the version (baseline)

    @property
    def output(self) -> str:
        """What a pipeline hands the next step: the registered version, else the logged model."""
        return f"models:/{self.registered_name}/{self.version}" if self.version else self.model_uri


def registered_name(arch: str) -> str:
    return f"medrobust-{arch}"


def run_train(config: TrainConfig, *, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train `config.arch` on `config.data`, log everything, register the model; see TrainResult.
    on_epoch(epoch, logs): called after each epoch is logged (a tuning trial reports and prunes there)."""
    tags = {"medrobust.step": "train", "medrobust.arch": config.arch}
    with tracking.run(config.experiment, run_name=config.run_name or f"train-{config.arch}", tags=tags) as run_id:
        set_seed(config.seed)
        data = load_dataset(config.data)
        result = train_in_run(run_id, config, data, on_epoch=on_epoch)
    log.info("train %s: %s", config.arch, headline(result))
    return result


def headline(result: TrainResult) -> str:
    """One line: the run, the figures a clinician reads first, what was registered."""
    m = result.metrics
    text = (f"run {result.run_id}  accuracy {m['clean_accuracy']:.3f}  macro recall {m['clean_macro_recall']:.3f}  "
            f"FNR {m['clean_fnr']:.3f}")
    if result.version:
        text += f"  registered {result.registered_name} v{result.version}" + (f" @{result.alias}" if result.alias else "")
    return text


def train_in_run(run_id: str, config: TrainConfig, data: Dataset, y_train: np.ndarray | None = None,
                 registered_as: str | None = None, extra_tags: dict[str, str] | None = None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Inside an active run: train on `data` (with `y_train` in place of the train labels if
    given, as poisoning does), evaluate on the clean test split, log and register.
    Returns a TrainResult."""
    tracking.log_params(flatten(config))
    tracking.log_dataset(data, context="train")
    tracking.log_params({
        "data.layout": data.layout, "data.source": data.source,
        **{f"data.n_{side}": len(y) for side, y in data.y.items()},
    })
    tracking.set_tags({"medrobust.data_fingerprint": data.fingerprint})
    tracking.log_text(data.table.to_csv(index=False), "data/split.csv")
    y_train = data.y["train"] if y_train is None else y_train
    set_seed(config.seed)

    def log_epoch(epoch, logs):
        tracking.log_metrics({EPOCH_METRICS[k]: v for k, v in logs.items() if k in EPOCH_METRICS}, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, logs)

    with distribution_scope(config.distribute):  # built and trained under one strategy: variables on every replica
        model = create_model(config.arch, data.x["train"].shape[1:], N_CLASSES, weights=config.weights,
                             dropout=config.dropout, width=config.width)
        history = fit(model, data.x["train"], y_train, data.x["val"], data.y["val"], config, on_epoch=log_epoch)
    tracking.log_json(history, "training/history.json")
    fig = plots.training_curves_figure(history)
    tracking.log_figure(fig, "training/curves.png")
    plots.close(fig)
    tracking.log_metrics({"epochs_trained": len(history["loss"])})

    log.info("evaluating on the test split (%d images)", len(data.y["test"]))
    predictions = predict_logits(model, data.x["test"]).argmax(axis=1)
    values = log_evaluation(data.y["test"], predictions, config.data.health_map, condition="clean")
    classifier = DefendedClassifier(model)  # no defense: served and loaded like every other version
    classifier.info |= operating_point(classifier, data, target_sensitivity=config.target_sensitivity,
                                       health_map=config.data.health_map)
    model_uri, logged_uri = tracking.log_classifier(classifier)
    name = version = None
    if config.register:  # last, so a failure anywhere above registers nothing
        name = registered_as or registered_name(config.arch)
        tags = {k: f"{values[k]:.4f}" for k in VERSION_TAGS} | {"data_fingerprint": data.fingerprint}
        tags |= {k: str(v) for k, v in classifier.info.items()} | {"operating_point_run": run_id}
        version = tracking.register_model(logged_uri, name, tags=tags | (extra_tags or {}), alias=config.alias)
    return TrainResult(run_id, model_uri, name, version, values, config.alias if version else None)
