"""A network's compiled functions (its forward pass, the attacks' steps), each traced once per
network and kept while the network lives.

Tracing a tf.function costs more than running it on a few images (FGSM on 20 images: 0.195 s
traced anew, 0.012 s reused; benchmarks/bench_tracing.py). Each attack call used to make and
trace its step again, for every eps and every attack of a suite on the same network, and
Keras' model.predict sets up a data pipeline on every call.

Each function is traced once for a batch of any size (`images(model)`: [None, H, W, C]), not
for the first batch's size: with reduce_retracing, which graph ran (the first shape's or the
relaxed one) depended on the batch sizes seen before, and the two differ in the last float
bit, so a reused step would have made an attack's images depend on what ran earlier.
"""

import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, TypeVar

import tensorflow as tf

if TYPE_CHECKING:
    import keras

Step = TypeVar("Step")

# network -> {key: its compiled step}. Weak on the network, and each step holds it through a
# proxy, so a network's graphs go when it does.
_BY_NETWORK: "weakref.WeakKeyDictionary[keras.Model, dict[Hashable, object]]" = weakref.WeakKeyDictionary()

SCALAR = tf.TensorSpec([], tf.float32)


def per_network(model: "keras.Model", key: Hashable, build: "Callable[[keras.Model], Step]") -> Step:
    """build(model) the first time (model, key) is asked for, the same object after. `key`
    names everything but the network that the step's graph depends on (the attack, its loss, a
    norm); `build` receives a weak proxy of the network, so that the step does not keep it alive:
    a caller keeps the network for as long as it uses the step (a step whose network is gone
    raises ReferenceError)."""
    made = _BY_NETWORK.setdefault(model, {})
    if key not in made:
        made[key] = build(weakref.proxy(model))
    return made[key]


def forward(model: "keras.Model") -> Callable[[tf.Tensor], tf.Tensor]:
    """`model`'s inference pass compiled, images (N, H, W, C) float32 -> logits (N, K); made once
    per model. Gradients flow through it as through the model."""
    return per_network(model, "forward", lambda network: tf.function(lambda x: network(x, training=False),
                                                                      input_signature=[images(network)]))


def images(model: "keras.Model") -> tf.TensorSpec:
    """The spec of a batch of any size of `model`'s float32 input images: [None, H, W, C]."""
    return tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)


def per_image(dtype: tf.DType = tf.float32) -> tf.TensorSpec:
    """The spec of one value per image of a batch of any size: [None]."""
    return tf.TensorSpec([None], dtype)


__all__ = ["SCALAR", "forward", "images", "per_image", "per_network"]
