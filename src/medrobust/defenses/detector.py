"""An adversarial-example detector (add a model): a small binary CNN told clean images from
their attacked twins. Our own rather than ART's BinaryInputDetector, which wraps a Keras
classifier in ART only to call fit on it; ours trains with the same seeded loop as every
other network and saves as a plain Keras model inside the defended model."""

from dataclasses import replace

import numpy as np

from .. import attacks
from ..models.training import fit, set_seed
from ..models.zoo import small_cnn

DETECTOR_WIDTHS = (16, 32, 64)


def paired_set(network, x, methods, eps, attack_params=None):
    """(images, labels): x (label 0) and x attacked on `network` (label 1), the images split
    evenly between `methods`; pairs make the detector learn the perturbation, not the lesion."""
    parts = np.array_split(np.arange(len(x)), len(methods))
    adv = np.empty_like(x)
    for method, idx in zip(methods, parts):
        if len(idx):
            adv[idx], _ = attacks.craft(method, network, x[idx], eps, **(attack_params or {}).get(method, {}))
    return np.concatenate([x, adv]), np.concatenate([np.zeros(len(x), int), np.ones(len(x), int)])


def train_detector(network, x, x_val, train_config, methods=("fgsm",), eps=2 / 255, epochs=5, attack_params=None,
                   on_epoch=None):
    """Train a detector on `x` and its attacked twins (attacks crafted on `network`); the
    validation pairs come from x_val. Returns (detector, history); the detector outputs the
    logits of (clean, adversarial)."""
    x_det, y_det = paired_set(network, x, methods, eps, attack_params)
    xv_det, yv_det = paired_set(network, x_val, methods, eps, attack_params)
    set_seed(train_config.seed)
    detector = small_cnn(x.shape[1:], 2, widths=DETECTOR_WIDTHS)
    config = replace(train_config, epochs=epochs, patience=0, class_weight="none")
    history = fit(detector, x_det, y_det, xv_det, yv_det, config, on_epoch=on_epoch)
    return detector, history
