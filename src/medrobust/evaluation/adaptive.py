"""Adaptive attacks: attacks that know the defence they face.

A detector beside the classifier is not beaten by attacking the classifier alone: the images
must also look clean to the detector. `joint_pgd` is PGD on both at once (Carlini & Wagner
2017, "Adversarial examples are not easily detected"). Input transformations are attacked
through their BPDA view (DefendedClassifier.as_keras); `eot_note` says whether expectation over
transformation (Athalye et al. 2018) is needed on top, which it is only for random ones.

Not in the ATTACKS registry: joint_pgd takes a second model, the detector.
"""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from .. import stopping
from ..defenses.transforms import TRANSFORMS
from ..errors import ConfigError
from ..attacks.budget import apply_budget, check_norm

if TYPE_CHECKING:
    from ..defenses.defended import DefendedClassifier

# The transformations of defenses.transforms.TRANSFORMS that draw random numbers: none of
# ours does (llt, jpeg, smooth and squeeze are deterministic; tests/unit/test_adaptive.py checks
# every entry of TRANSFORMS), so a new random one must be named here.
RANDOM_TRANSFORMS = frozenset()

# joint_pgd's confidence (Carlini & Wagner's kappa), in logits: a term stops pulling once its
# goal is met by this much.
CONFIDENCE = 1.0


def _random_start(x, eps, norm, seed):
    """A uniform point of the L-inf ball, or of the L2 ball (uniform direction, radius
    eps * u^(1/d)), per image, from numpy's generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    if norm == "inf":
        return rng.uniform(-eps, eps, size=x.shape).astype(np.float32)
    flat = rng.standard_normal((len(x), int(np.prod(x.shape[1:]))))
    radius = eps * rng.random((len(x), 1)) ** (1.0 / flat.shape[1])
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True) * radius).reshape(x.shape).astype(np.float32)


def _joint_step(model, detector, norm, eps, step_size, detector_weight, margin_threshold):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    n_classes = int(model.output_shape[-1])

    def status(logits, margin, labels):
        fooled = tf.argmax(logits, axis=1, output_type=tf.int32) != labels
        return fooled, margin < margin_threshold

    @tf.function(reduce_retracing=True)
    def step(x_clean, x_adv, labels):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model(x_adv, training=False)
            scores = detector(x_adv, training=False)
            margin = scores[:, 1] - scores[:, 0]  # >= margin_threshold: rejected as adversarial
            # Each term pulls only until its goal is met with room CONFIDENCE (C&W's kappa):
            # the cross-entropy while no other class leads the clean one by CONFIDENCE, the
            # detector while its margin is above threshold - CONFIDENCE. Unclipped, the larger
            # gradient wins every signed step (measured: the detector's, and no image fooled).
            lead = tf.reduce_max(logits - 1e9 * tf.one_hot(labels, n_classes), axis=1) - \
                tf.gather(logits, labels, batch_dims=1)
            classifier_term = loss_fn(labels, logits) * tf.cast(lead < CONFIDENCE, tf.float32)
            detector_term = tf.nn.relu(margin - margin_threshold + CONFIDENCE)
            objective = tf.reduce_sum(classifier_term - detector_weight * detector_term)  # per image: a sum
        grad = tape.gradient(objective, x_adv)
        if norm == "inf":
            direction = tf.sign(grad)
        else:
            direction = grad / (tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3], keepdims=True)) + 1e-12)
        delta = x_adv + step_size * direction - x_clean
        if norm == "inf":
            delta = tf.clip_by_value(delta, -eps, eps)
        else:
            length = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3], keepdims=True))
            delta = delta * tf.minimum(1.0, eps / tf.maximum(length, 1e-12))
        fooled, passed = status(logits, margin, labels)  # of x_adv, the point the step started from
        return tf.clip_by_value(x_clean + delta, 0.0, 1.0), fooled, passed

    @tf.function(reduce_retracing=True)
    def measure(x_adv, labels):
        scores = detector(x_adv, training=False)
        return status(model(x_adv, training=False), scores[:, 1] - scores[:, 0], labels)

    @tf.function(reduce_retracing=True)
    def predict(images):
        return tf.argmax(model(images, training=False), axis=1, output_type=tf.int32)

    return step, measure, predict


def joint_pgd(model: keras.Model, detector: keras.Model, x: np.ndarray, *, y: np.ndarray | None = None, eps: float,
              norm: str = "inf", steps: int = 20, step_size: float | None = None, detector_weight: float = 1.0,
              threshold: float = 0.5, seed: int = 0, batch_size: int = 128) -> np.ndarray:
    """White-box PGD against a classifier and the detector beside it, at once.

    Each step ascends, per image, the classifier's cross-entropy on the true label y (None: its
    own clean prediction)
    minus `detector_weight` times the detector's adversarial logit margin (logit[1] - logit[0];
    the detector outputs logits of (clean, adversarial)), so the image is pushed both to change
    the class and to look clean. As in Carlini & Wagner's losses, each term stops pulling once
    its goal is met by CONFIDENCE logits (another class leads; the margin is below the
    threshold's), leaving the steps to the other. Steps of `step_size` (default eps / 4): the
    gradient's sign (L-inf) or the gradient scaled to that length (L2), each followed by
    projection onto the eps-ball around x and onto [0, 1], from a uniform random start in the
    ball drawn with `seed` (the same seed gives the same images, whatever batch_size).

    model: the classifier as a Keras model, [0, 1] images in, logits out (for a defended model
    its BPDA view, DefendedClassifier.as_keras()); detector: a Keras model on the raw input.
    threshold: the detector's rejection threshold on P(adversarial), as in
    DefendedClassifier.rejected. Of the points visited, each image keeps the last one that
    both changed the class and passed the detector, else the last that changed the class,
    else the final one. x: (N, H, W, 3) float32 in [0, 1]; returns x_adv of the same shape.
    """
    norm = check_norm(norm)
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    x = np.asarray(x, dtype=np.float32)
    if float(eps) == 0:
        return x.copy()
    # P(adversarial) = sigmoid(margin) >= threshold  <=>  margin >= logit(threshold)
    step, measure, predict = _joint_step(model, detector, norm, tf.constant(eps, tf.float32),
                                         tf.constant(step_size or eps / 4, tf.float32),
                                         tf.constant(detector_weight, tf.float32),
                                         tf.constant(math.log(threshold / (1 - threshold)), tf.float32))
    start = apply_budget(x, x + _random_start(x, eps, norm, seed), eps, norm)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        x_clean = tf.constant(x[i:i + batch_size])
        labels = predict(x_clean) if y is None else tf.constant(np.asarray(y)[i:i + batch_size], tf.int32)
        x_adv = tf.constant(start[i:i + batch_size])
        best = x_adv.numpy()
        best_level = np.full(len(best), -1)
        for k in range(steps + 1):
            stopping.checkpoint()
            if k < steps:
                x_next, fooled, passed = step(x_clean, x_adv, labels)
            else:
                fooled, passed = measure(x_adv, labels)
            fooled = fooled.numpy()
            level = fooled.astype(int) + (fooled & passed.numpy())  # 2: fools and passes, 1: fools
            better = level >= best_level
            best[better] = x_adv.numpy()[better]
            best_level[better] = level[better]
            if k < steps:
                x_adv = x_next
        out[i:i + batch_size] = best
    return apply_budget(x, out, eps, norm)


def eot_note(chain: Sequence[tuple[str, dict]]) -> str:
    """One sentence for the report: whether any input transformation of `chain` ((name,
    params), ...) is random, hence whether EOT (expectation over transformation, Athalye et al.
    2018) has to average the attack's gradient over several draws of it."""
    names = [name for name, _ in chain]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ConfigError(f"unknown input transformation {', '.join(map(repr, unknown))}; "
                          f"expected some of {', '.join(TRANSFORMS)}")
    if not names:
        return "No input transformation: EOT (expectation over transformation, Athalye et al. 2018) does not apply."
    random = [n for n in names if n in RANDOM_TRANSFORMS]
    if random:
        return (f"The input transformations {', '.join(random)} are random: EOT (expectation over transformation, "
                "Athalye et al. 2018) must average each gradient over several draws of them; the attacks here "
                "take one draw.")
    return (f"The input transformations ({', '.join(names)}) are deterministic: EOT (expectation over "
            "transformation, Athalye et al. 2018) reduces to one sample, the BPDA gradient of a single pass.")


def adaptive_notes(model: "DefendedClassifier") -> list[str]:
    """What the adaptive suite can adapt to in this model, as sentences for the report."""
    notes = [eot_note(model.chain)] if model.chain else []
    if getattr(model, "smoothing", None) is not None:
        notes.append("adaptive: randomized smoothing: the attacks see one noise draw per step (no expectation over "
                     "the noise), so this model's robust figures are upper bounds; the certified suite gives the "
                     "lower bound")
    elif not model.chain and model.detector is None:
        notes.append("adaptive: the model has no input transformation and no detector to adapt to; its attacks run "
                     "white-box on the network, as plain attacks")
    if model.detector is None:
        notes.append("adaptive: no detector, so no joint attack on classifier and detector")
    return notes
