"""A defended classifier: the network, the input transformations in front of it, if any an
adversarial-example detector beside it, and if any randomized smoothing (a vote of the network
over noisy copies, abstaining when too close to call; defenses/smoothing.py). This is what the `defend` step logs as one MLflow
model and what `predict` and the attack step load.

Saved as a folder: network.keras, detector.keras (if any) and defense.json (the chain, the
detector threshold, the smoothing, the spec and where the network came from).
"""

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..errors import ModelError
from ..models.training import predict_logits
from .smoothing import abstains, vote_counts, vote_logits
from .transforms import apply_chain, backward_chain

FORMAT_VERSION = 2  # 2: may hold smoothing, which a reader of format 1 would silently drop
READS = (1, 2)
SMOOTHING_KEYS = ("sigma", "samples", "alpha", "seed")


@dataclass
class DefendedClassifier:
    network: keras.Model
    chain: tuple = ()  # ((transform name, {params}), ...), applied first to last
    detector: keras.Model | None = None  # logits of (clean, adversarial)
    threshold: float = 0.5  # reject when P(adversarial) >= threshold
    info: dict = field(default_factory=dict)  # spec, parameters, parent model URI
    smoothing: dict | None = None  # {"sigma", "samples", "alpha", "seed"}: answer by a vote under noise

    @property
    def can_reject(self) -> bool:
        """Whether `rejected` can say True: a detector, or smoothing's abstention."""
        return self.detector is not None or self.smoothing is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.network.input_shape[1:])

    @property
    def n_classes(self) -> int:
        return int(self.network.output_shape[-1])

    def transform(self, x: np.ndarray) -> np.ndarray:
        return apply_chain(x, self.chain) if self.chain else np.asarray(x, dtype=np.float32)

    def votes(self, x: np.ndarray) -> np.ndarray:
        """(N, K) smoothing's vote counts: noise on the images as given, then the transformations
        and the network (seeded per image; the last call's counts are kept, since `logits` and
        `rejected` ask for the same images in turn)."""
        x = np.asarray(x, dtype=np.float32)
        key = (x.shape, zlib.crc32(np.ascontiguousarray(x).tobytes()))
        cached = getattr(self, "_votes", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        s = self.smoothing
        counts = vote_counts(lambda z: predict_logits(self.network, self.transform(z)), x, sigma=s["sigma"],
                             samples=s["samples"], seed=s["seed"])
        self._votes = (key, counts)
        return counts

    def logits(self, x: np.ndarray, batch_size: int = 256, *, direct: bool = False) -> np.ndarray:
        """(N, K) logits of the network on the transformed images (direct: see predict_logits);
        with smoothing, the log vote shares (smoothing.vote_logits)."""
        if self.smoothing is not None:
            return vote_logits(self.votes(x))
        return predict_logits(self.network, self.transform(x), batch_size, direct=direct)

    def rejected(self, x: np.ndarray, batch_size: int = 256, *, direct: bool = False) -> np.ndarray:
        """(N,) bool: the detector calls the raw input adversarial, or smoothing abstains (all
        False without either)."""
        out = np.zeros(len(x), dtype=bool)
        if self.detector is not None:
            out |= adversarial_probability(self.detector, x, batch_size, direct=direct) >= self.threshold
        if self.smoothing is not None:
            out |= abstains(self.votes(x), self.smoothing["alpha"])
        return out

    def as_keras(self) -> "keras.Model":
        """A Keras model for attacks: forward exactly as `logits`, gradients through the
        transformations by BPDA (see transforms.py). With no chain, the network itself. With
        smoothing, the network on one noisy copy per call (fresh noise every step: an attack on
        the vote in expectation, as Salman et al. 2019 attack smoothed classifiers)."""
        if not self.chain and self.smoothing is None:
            return self.network
        inputs = keras.Input(self.input_shape, name="image")
        x = inputs
        if self.smoothing is not None:  # in front of the transformations, as the vote adds it
            x = AlwaysNoise(self.smoothing["sigma"], seed=self.smoothing["seed"], name="smoothing_noise")(x)
        x = ChainLayer(self.chain, name="input_transforms")(x) if self.chain else x
        outputs = self.network(x)
        return keras.Model(inputs, outputs, name=f"defended_{self.network.name}")

    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.network.save(folder / "network.keras")
        if self.detector is not None:
            self.detector.save(folder / "detector.keras")
        spec = {"format": FORMAT_VERSION if self.smoothing is not None else 1,  # older readers load the rest
                "chain": [[n, p] for n, p in self.chain], "threshold": self.threshold,
                "detector": self.detector is not None, "info": self.info, "smoothing": self.smoothing}
        (folder / "defense.json").write_text(json.dumps(spec, indent=2))
        return folder


def load_defended(folder: Path | str) -> DefendedClassifier:
    folder = Path(folder)
    spec = json.loads((folder / "defense.json").read_text())
    if spec.get("format") not in READS:
        raise ModelError(f"{folder / 'defense.json'}: unknown defended-model format {spec.get('format')!r} (this "
                         f"medrobust reads {', '.join(map(str, READS))}: upgrade it)")
    smoothing = spec.get("smoothing")  # absent in folders saved before smoothing
    if smoothing is not None and (not isinstance(smoothing, dict) or set(smoothing) != set(SMOOTHING_KEYS)):
        raise ModelError(f"{folder / 'defense.json'}: smoothing must hold {', '.join(SMOOTHING_KEYS)}, got {smoothing!r}")
    network = keras.models.load_model(folder / "network.keras", compile=False)
    detector = keras.models.load_model(folder / "detector.keras", compile=False) if spec["detector"] else None
    chain = tuple((name, dict(params)) for name, params in spec["chain"])
    return DefendedClassifier(network, chain, detector, float(spec["threshold"]), spec.get("info", {}), smoothing)


def adversarial_probability(detector: "keras.Model", x: np.ndarray, batch_size: int = 256, *,
                            direct: bool = False) -> np.ndarray:
    logits = predict_logits(detector, np.asarray(x, dtype=np.float32), batch_size, direct=direct)
    return np.asarray(tf.nn.softmax(logits, axis=-1))[:, 1]


class AlwaysNoise(keras.layers.Layer):
    """Gaussian noise of `stddev` added in inference too (keras' GaussianNoise is training-only)."""

    def __init__(self, stddev, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + keras.random.normal(keras.ops.shape(x), stddev=self.stddev, seed=self.generator)


class ChainLayer(keras.layers.Layer):
    """The transformation chain as a layer: numpy forward, BPDA backward. Not serialisable on
    purpose: a defended model is saved as its parts (DefendedClassifier.save)."""

    def __init__(self, chain, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.chain = tuple(chain)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        chain = self.chain

        @tf.custom_gradient
        def bpda(images):
            out = tf.numpy_function(lambda a: apply_chain(a, chain), [images], tf.float32)
            out = tf.reshape(out, tf.shape(images))

            def grad(dy):
                return backward_chain(dy, chain)

            return out, grad

        return bpda(tf.convert_to_tensor(x, dtype=tf.float32))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape
