"""Our Keras networks as ART classifiers."""

import keras
from art.estimators.classification import TensorFlowV2Classifier


def as_art_classifier(model):
    """Wrap a Keras model that takes [0, 1] images and outputs logits.

    The loss is categorical cross-entropy on logits; clip values (0, 1) make every ART attack
    keep images valid.
    """
    return TensorFlowV2Classifier(
        model=model,
        nb_classes=int(model.output_shape[-1]),
        input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
