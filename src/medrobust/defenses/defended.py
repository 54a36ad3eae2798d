"""A defended classifier: the network, the input transformations in front of it and, if any,
an adversarial-example detector beside it. This is what the `defend` step logs as one MLflow
model and what `predict` and the attack step load.

Saved as a folder: network.keras, detector.keras (if any) and defense.json (the chain, the
detector threshold, the spec and where the network came from).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..errors import ModelError
from ..models.training import predict_logits
from .transforms import apply_chain, backward_chain

FORMAT_VERSION = 1


@dataclass
class DefendedClassifier:
    network: keras.Model
    chain: tuple = ()  # ((transform name, {params}), ...), applied first to last
    detector: keras.Model | None = None  # logits of (clean, adversarial)
    threshold: float = 0.5  # reject when P(adversarial) >= threshold
    info: dict = field(default_factory=dict)  # spec, parameters, parent model URI

    @property
    def input_shape(self):
        return tuple(self.network.input_shape[1:])

    @property
    def n_classes(self):
        return int(self.network.output_shape[-1])

    def transform(self, x):
        return apply_chain(x, self.chain) if self.chain else np.asarray(x, dtype=np.float32)

    def logits(self, x, batch_size=256, *, direct=False):
        """(N, K) logits of the network on the transformed images (direct: see predict_logits)."""
        return predict_logits(self.network, self.transform(x), batch_size, direct=direct)

    def rejected(self, x, batch_size=256, *, direct=False):
        """(N,) bool: the detector calls the raw input adversarial (all False without one)."""
        if self.detector is None:
            return np.zeros(len(x), dtype=bool)
        return adversarial_probability(self.detector, x, batch_size, direct=direct) >= self.threshold

    def as_keras(self):
        """A Keras model for attacks: forward exactly as `logits`, gradients through the
        transformations by BPDA (see transforms.py). With no chain, the network itself."""
        if not self.chain:
            return self.network
        inputs = keras.Input(self.input_shape, name="image")
        outputs = self.network(ChainLayer(self.chain, name="input_transforms")(inputs))
        return keras.Model(inputs, outputs, name=f"defended_{self.network.name}")

    def save(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.network.save(folder / "network.keras")
        if self.detector is not None:
            self.detector.save(folder / "detector.keras")
        spec = {"format": FORMAT_VERSION, "chain": [[n, p] for n, p in self.chain], "threshold": self.threshold,
                "detector": self.detector is not None, "info": self.info}
        (folder / "defense.json").write_text(json.dumps(spec, indent=2))
        return folder


def load_defended(folder):
    folder = Path(folder)
    spec = json.loads((folder / "defense.json").read_text())
    if spec.get("format") != FORMAT_VERSION:
        raise ModelError(f"{folder / 'defense.json'}: unknown defended-model format {spec.get('format')!r}")
    network = keras.models.load_model(folder / "network.keras", compile=False)
    detector = keras.models.load_model(folder / "detector.keras", compile=False) if spec["detector"] else None
    chain = tuple((name, dict(params)) for name, params in spec["chain"])
    return DefendedClassifier(network, chain, detector, float(spec["threshold"]), spec.get("info", {}))


def adversarial_probability(detector, x, batch_size=256, *, direct=False):
    logits = predict_logits(detector, np.asarray(x, dtype=np.float32), batch_size, direct=direct)
    return np.asarray(tf.nn.softmax(logits, axis=-1))[:, 1]


class ChainLayer(keras.layers.Layer):
    """The transformation chain as a layer: numpy forward, BPDA backward. Not serialisable on
    purpose: a defended model is saved as its parts (DefendedClassifier.save)."""

    def __init__(self, chain, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.chain = tuple(chain)

    def call(self, x):
        chain = self.chain

        @tf.custom_gradient
        def bpda(images):
            out = tf.numpy_function(lambda a: apply_chain(a, chain), [images], tf.float32)
            out = tf.reshape(out, tf.shape(images))

            def grad(dy):
                return backward_chain(dy, chain)

            return out, grad

        return bpda(tf.convert_to_tensor(x, dtype=tf.float32))

    def compute_output_shape(self, input_shape):
        return input_shape
