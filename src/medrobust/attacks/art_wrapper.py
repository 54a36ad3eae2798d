"""Our Keras networks as ART classifiers (their forward pass compiled once, for ART's attacks), and
seeding for ART attacks that take no seed."""

import contextlib
import random
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf
from art.estimators.classification import TensorFlowV2Classifier

from .. import stopping
from ..models import tracing


class CompiledForward:
    """A Keras model's inference forward pass as one compiled graph, for ART: ART calls its
    model eagerly at every step, which costs most of an iteration on small inputs (APGD-CE on 8
    images of 16 px: 4.1 s eager, 1.6 s compiled, the same images). Gradients flow through it
    as through the model, BPDA layers included."""

    def __init__(self, model: "keras.Model") -> None:
        self.input_shape, self.output_shape, self.name = model.input_shape, model.output_shape, model.name
        self._forward = tracing.forward(model)

    def __call__(self, images, training=False):
        # attacks never train: training is always False here. ART hands numpy arrays of its own dtype.
        return self._forward(tf.cast(images, tf.float32))


class _StoppableClassifier(TensorFlowV2Classifier):
    """ART's classifier, with SIGTERM's checkpoint (stopping.py) at each call an attack makes of
    it: ART's attacks loop inside ART, where no checkpoint of ours is."""

    def predict(self, x, *args, **kwargs):
        stopping.checkpoint()
        return super().predict(x, *args, **kwargs)

    def loss_gradient(self, x, y, *args, **kwargs):
        stopping.checkpoint()
        return super().loss_gradient(x, y, *args, **kwargs)

    def class_gradient(self, x, *args, **kwargs):
        stopping.checkpoint()
        return super().class_gradient(x, *args, **kwargs)


def as_art_classifier(model: "keras.Model | CompiledForward") -> TensorFlowV2Classifier:
    """Wrap a Keras model (or its compiled forward pass) that takes [0, 1] images and outputs logits.

    The loss is categorical cross-entropy on logits; clip values (0, 1) make every ART attack
    keep images valid.
    """
    return _StoppableClassifier(
        model=model,
        nb_classes=int(model.output_shape[-1]),
        input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Inside the block, Python's and numpy's global generators are seeded with `seed`; after
    it, the state they had before is back, so seeding an attack moves no one else's numbers.

    ART's attacks take no seed: PGD's random start draws from numpy's global generator
    (art.utils.random_sphere) and UniversalPerturbation visits the images in an order drawn
    from Python's (random.sample). Seeding both right before `generate` makes them reproducible.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
