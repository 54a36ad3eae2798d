"""Defensive distillation (modify the model; Papernot et al. 2016), our own: ART's
DefensiveDistillation trains on the teacher's probabilities at temperature 1, while the defence
needs both the teacher's soft labels and the student's training at temperature T."""

from dataclasses import replace

import keras
import numpy as np
import tensorflow as tf

from ..models.training import fit, predict_logits


def distill(teacher, x, y, x_val, y_val, train_config, temperature=20.0, epochs=4, on_epoch=None):
    """A student network trained on softmax(teacher logits / T) with its own logits divided by
    T, deployed at T = 1 (which saturates its softmax and flattens its input gradients).

    The student starts from the teacher's weights, so a few epochs suffice on a CPU; it is
    returned with the same architecture and input as the teacher. Returns (student, history).
    """
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    soft = np.asarray(tf.nn.softmax(predict_logits(teacher, x) / temperature, axis=-1), dtype=np.float32)
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    # Training sees logits / T through a scaling layer that shares the student's weights.
    inputs = keras.Input(teacher.input_shape[1:])
    trainer = keras.Model(inputs, keras.layers.Rescaling(1.0 / temperature, name="temperature")(student(inputs)))
    history = fit(trainer, x, soft, x_val, y_val, replace(train_config, epochs=epochs, patience=0),
                  on_epoch=on_epoch, loss=keras.losses.CategoricalCrossentropy(from_logits=True), labels_for_weights=y)
    return student, history
