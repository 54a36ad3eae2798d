"""Gradient attacks: FGSM (ours, checked against ART's) and PGD (ART).

ART's FastGradientMethod runs at about a third of the model's forward+backward rate on CPU
(benchmarks/README.md): it predicts the labels in a separate forward pass and takes the
gradient eagerly. `fgsm` does the same arithmetic in one compiled forward+backward per batch,
the labels being the argmax of that same forward pass; tests/test_attacks.py checks that it
gives ART's images. `fgsm_art` keeps ART's for comparison.
"""

import keras
import numpy as np
import tensorflow as tf
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

from .art_wrapper import as_art_classifier, seeded_globals
from .budget import art_norm


def _one_hot(labels, n):
    return np.eye(n, dtype=np.float32)[labels]


def _fgsm_step(model, norm, targeted):
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    n_classes = int(model.output_shape[-1])

    @tf.function(reduce_retracing=True)
    def step(xb, eps, target):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            logits = model(xb, training=False)
            labels = target if targeted else tf.argmax(logits, axis=1, output_type=tf.int32)
            loss = loss_fn(tf.one_hot(labels, n_classes), logits)
        grad = tape.gradient(loss, xb)
        if norm == "inf":
            direction = tf.sign(grad)
        else:  # ART's L2 step: the gradient over its per-image norm (+1e-7, as ART adds)
            direction = grad / (tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3], keepdims=True)) + 1e-7)
        step_ = eps * direction
        return tf.clip_by_value(xb - step_ if targeted else xb + step_, 0.0, 1.0)

    return step


def fgsm(model, x, *, eps, norm="inf", target=None, batch_size=128):
    """One gradient step of size eps (Goodfellow et al. 2015): the sign of the gradient
    (L-inf) or the gradient scaled to length eps (L2), away from the model's own prediction,
    or towards class index `target`. Our compiled version of ART's FastGradientMethod."""
    step = _fgsm_step(model, norm, target is not None)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        xb = tf.constant(x[i:i + batch_size])
        labels = tf.fill([len(xb)], tf.constant(-1 if target is None else int(target), tf.int32))
        out[i:i + batch_size] = step(xb, tf.constant(eps, tf.float32), labels).numpy()
    return out


def fgsm_art(model, x, *, eps, norm="inf", target=None, batch_size=128):
    """One signed-gradient step of size eps (Goodfellow et al. 2015), through ART.

    target: None (untargeted: away from the model's own prediction) or a class index every
    image is pushed towards.
    """
    classifier = as_art_classifier(model)
    attack = FastGradientMethod(classifier, norm=art_norm(norm), eps=eps, targeted=target is not None,
                                batch_size=batch_size)
    y = None if target is None else _one_hot(np.full(len(x), target), classifier.nb_classes)
    return attack.generate(x=x, y=y)


def pgd(model, x, *, eps, norm="inf", target=None, steps=10, step_size=None, random_start=True, batch_size=128,
        seed=0):
    """Projected gradient descent (Madry et al. 2018): `steps` steps of `step_size`
    (default eps / 4) with projection onto the eps-ball, from a random start if asked (drawn
    with `seed`: the same seed gives the same images)."""
    classifier = as_art_classifier(model)
    attack = ProjectedGradientDescent(
        classifier, norm=art_norm(norm), eps=eps, eps_step=step_size or eps / 4, max_iter=steps,
        targeted=target is not None, num_random_init=1 if random_start else 0, batch_size=batch_size,
        verbose=False,
    )
    y = None if target is None else _one_hot(np.full(len(x), target), classifier.nb_classes)
    # ART takes no seed: its random start (art.utils.random_sphere) draws from numpy's global
    # generator, so np.random.seed(seed) right before generate makes it reproducible.
    with seeded_globals(seed):
        return attack.generate(x=x, y=y)
