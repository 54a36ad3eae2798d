"""An adversarial-example detector (add a model): a small binary CNN told clean images from
their attacked twins. Our own rather than ART's BinaryInputDetector, which wraps a Keras
classifier in ART only to call fit on it; ours trains with the same seeded loop as every
other network and saves as a plain Keras model inside the defended model."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import attacks
from ..config import DefendConfig, TrainConfig
from ..models.training import fit, set_seed
from ..models.zoo import small_cnn
from .spec import Hooks, training_config

if TYPE_CHECKING:
    import keras

    from ..data import Dataset
    from .defended import DefendedClassifier

log = logging.getLogger(__name__)

DETECTOR_WIDTHS = (16, 32, 64)


def paired_set(network: "keras.Model", x: np.ndarray, methods: Sequence[str], eps: float,
               attack_params: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): x (label 0) and x attacked on `network` (label 1), the images split
    evenly between `methods`; pairs make the detector learn the perturbation, not the lesion.
    attack_params: {method: {parameter: value}}; seed goes to the attacks that take one."""
    parts = np.array_split(np.arange(len(x)), len(methods))
    adv = np.empty_like(x)
    for method, idx in zip(methods, parts):
        if len(idx):
            adv[idx], _ = attacks.craft(method, network, x[idx], eps, seed=seed, **(attack_params or {}).get(method, {}))
    return np.concatenate([x, adv]), np.concatenate([np.zeros(len(x), int), np.ones(len(x), int)])


def train_detector(network: "keras.Model", x: np.ndarray, x_val: np.ndarray, train_config: TrainConfig,
                   methods: Sequence[str] = ("fgsm",), eps: float = 2 / 255, epochs: int = 5,
                   attack_params: dict[str, dict[str, Any]] | None = None,
                   on_epoch: Callable[[int, dict], None] | None = None) -> "tuple[keras.Model, dict[str, list]]":
    """Train a detector on `x` and its attacked twins (attacks crafted on `network`); the
    validation pairs come from x_val. Returns (detector, history); the detector outputs the
    logits of (clean, adversarial)."""
    x_det, y_det = paired_set(network, x, methods, eps, attack_params, train_config.seed)
    xv_det, yv_det = paired_set(network, x_val, methods, eps, attack_params, train_config.seed)
    set_seed(train_config.seed)
    detector = small_cnn(x.shape[1:], 2, widths=DETECTOR_WIDTHS)
    config = replace(train_config, epochs=epochs, patience=0, class_weight="none")
    history = fit(detector, x_det, y_det, xv_det, yv_det, config, on_epoch=on_epoch)
    return detector, history


def build(classifier: "DefendedClassifier", data: "Dataset", config: DefendConfig,
          hooks: Hooks) -> "DefendedClassifier":
    """Registry builder: the classifier with a detector trained against its network as it is
    now (after distill and retrain), rejecting at `config.detector_threshold`."""
    log.info("training the detector on %s at eps %.4f, %d epochs", ", ".join(config.detector_attacks),
             config.detector_eps, config.detector_epochs)
    detector, history = train_detector(classifier.network, data.x["train"], data.x["val"], training_config(config),
                                       config.detector_attacks, config.detector_eps, config.detector_epochs,
                                       {"uap_fast": {"max_steps": config.uap_max_steps}},
                                       on_epoch=partial(hooks.on_epoch, "detector"))
    hooks.on_history("detector", history)
    return replace(classifier, detector=detector, threshold=config.detector_threshold)
