"""Defensive distillation (modify the model; Papernot et al. 2016), our own.

Papernot's teacher is trained with its logits divided by T, which makes them about T times
larger than a network trained at T = 1; its softmax at T gives the student's soft labels, the
student is trained at T too and deployed at T = 1, where its softmax saturates and its input
gradients vanish. Our parent is already trained at T = 1, so its probabilities play the
teacher's softened output, and the student, trained with its logits divided by T, learns
logits about T times the parent's: the same end point without training a teacher again.
ART's DefensiveDistillation has no temperature of its own (it expects the classifier to carry
one), hence ours. The defense is known to mask gradients rather than remove adversarial
examples (Carlini & Wagner 2016): the transfer rows of its report show what is left.
"""

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from ..config import DefendConfig, TrainConfig
from ..errors import ConfigError
from ..models.training import fit, predict_logits
from .spec import Hooks, training_config

if TYPE_CHECKING:
    from ..data import Dataset
    from .defended import DefendedClassifier

log = logging.getLogger(__name__)


def distill(teacher: "keras.Model", x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            train_config: TrainConfig, temperature: float = 20.0, epochs: int = 4,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> "tuple[keras.Model, dict[str, list]]":
    """A student trained on the teacher's probabilities with its own logits divided by
    `temperature`, deployed as is (T = 1). It starts from the teacher's weights, so a few
    epochs suffice on a CPU, and keeps the teacher's architecture and input.
    Returns (student, per-epoch history)."""
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    soft = np.asarray(tf.nn.softmax(predict_logits(teacher, x), axis=-1), dtype=np.float32)
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    # Training sees logits / T through a scaling layer that shares the student's weights.
    inputs = keras.Input(teacher.input_shape[1:])
    trainer = keras.Model(inputs, keras.layers.Rescaling(1.0 / temperature, name="temperature")(student(inputs)))
    history = fit(trainer, x, soft, x_val, y_val, replace(train_config, epochs=epochs, patience=0),
                  on_epoch=on_epoch, loss=keras.losses.CategoricalCrossentropy(from_logits=True), labels_for_weights=y)
    return student, history


def build(classifier: "DefendedClassifier", data: "Dataset", config: DefendConfig,
          hooks: Hooks) -> "DefendedClassifier":
    """Registry builder: the classifier with its network replaced by a student distilled at
    `config.temperature` for `config.distill_epochs` epochs on the training split."""
    log.info("distillation at T=%g, %d epochs", config.temperature, config.distill_epochs)
    student, history = distill(classifier.network, data.x["train"], data.y["train"], data.x["val"], data.y["val"],
                               training_config(config), config.temperature, config.distill_epochs,
                               on_epoch=partial(hooks.on_epoch, "distill"))
    hooks.on_history("distill", history)
    return replace(classifier, network=student)
