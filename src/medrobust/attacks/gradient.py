"""Gradient attacks: FGSM (ours, checked against ART's), PGD, APGD-CE and AutoAttack (ART), and
PGD on the C&W margin loss (ours).

ART's FastGradientMethod runs at about a third of the model's forward+backward rate on CPU
(benchmarks/README.md): it predicts the labels in a separate forward pass and takes the
gradient eagerly. `fgsm` does the same arithmetic in one compiled forward+backward per batch,
the labels being the argmax of that same forward pass; tests/test_attacks.py checks that it
gives ART's images. `fgsm_art` keeps ART's for comparison.
"""

import keras
import numpy as np
import tensorflow as tf
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, FastGradientMethod, ProjectedGradientDescent
from art.attacks.evasion.auto_attack import run_attack

from ..errors import ConfigError
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


def _margin_step(model, targeted):
    n_classes = int(model.output_shape[-1])

    @tf.function(reduce_retracing=True)
    def step(xb, x0, eps, alpha, labels):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            logits = model(xb, training=False)
            onehot = tf.one_hot(labels, n_classes)
            own = tf.reduce_sum(logits * onehot, axis=1)
            other = tf.reduce_max(logits - 1e9 * onehot, axis=1)
            loss = own - other if targeted else other - own  # C&W's margin, raised by the step
        grad = tape.gradient(loss, xb)
        xb = tf.clip_by_value(xb + alpha * tf.sign(grad), x0 - eps, x0 + eps)
        return tf.clip_by_value(xb, 0.0, 1.0)

    return step


def cw_pgd(model, x, *, eps, norm="inf", target=None, steps=20, step_size=None, random_start=True, batch_size=128,
           seed=0):
    """PGD on Carlini and Wagner's margin loss (2017), L-inf: `steps` signed steps of
    `step_size` (default eps / 4) raising the largest other logit over the logit of the model's
    own clean prediction (or raising the target's logit over all others), projected onto the
    eps-ball, from a uniform random start drawn with `seed`. The margin loss does not saturate
    where cross-entropy does, so it can break images PGD-CE leaves, and the reverse (at 8/255 on
    the make baseline model PGD-CE is the stronger: benchmarks/README.md); a suite runs both and
    reports the worst. Ours, batched and compiled:
    ART's CarliniLInfMethod (`cw`) optimises one image at a time, and on 20 images of 32 px
    through a defended model ran for minutes on 2 cores; the C&W loss under a PGD budget is how
    RobustBench-style evaluations run it."""
    if norm != "inf":
        raise ConfigError(f"attack cw_pgd has no {norm} norm; it supports inf")
    step = _margin_step(model, target is not None)
    rng = np.random.default_rng(seed)
    alpha = tf.constant(step_size or eps / 4, tf.float32)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        x0 = tf.constant(x[i:i + batch_size])
        if target is None:
            labels = tf.argmax(model(x0, training=False), axis=1, output_type=tf.int32)
        else:
            labels = tf.fill([len(x0)], tf.constant(int(target), tf.int32))
        start = x[i:i + batch_size]
        if random_start:
            start = np.clip(start + rng.uniform(-eps, eps, size=start.shape).astype(np.float32), 0, 1)
        xb = tf.constant(start)
        for _ in range(steps):
            xb = step(xb, x0, tf.constant(eps, tf.float32), alpha, labels)
        out[i:i + batch_size] = xb.numpy()
    return out


class _Compiled:
    """A Keras model's inference forward pass as one compiled graph, for ART: ART calls its
    model eagerly at every step, which costs most of an iteration on small inputs (APGD-CE on 8
    images of 16 px: 4.1 s eager, 1.6 s compiled, the same images). Gradients flow through it
    as through the model, BPDA layers included."""

    def __init__(self, model):
        self.input_shape, self.output_shape, self.name = model.input_shape, model.output_shape, model.name
        self._forward = tf.function(lambda images: model(images, training=False), reduce_retracing=True)

    def __call__(self, images, training=False):
        return self._forward(images)  # attacks never train: training is always False here


def apgd(model, x, *, eps, norm="inf", target=None, steps=20, step_size=None, restarts=1, batch_size=128, seed=0):
    """APGD-CE (Croce & Hein 2020), through ART's AutoProjectedGradientDescent: PGD on the
    cross-entropy whose step size (initially `step_size`, default 2 eps as in the paper) halves
    at checkpoints where the loss stopped rising, with momentum 0.75, keeping the best point
    seen. `steps` iterations from each of `restarts` random starts (drawn with `seed`: the
    same seed gives the same images); later restarts attack only the images still unbroken,
    and an image never broken comes back unchanged (ART keeps successes only). Untargeted:
    away from the model's own prediction; or towards class index `target`."""
    classifier = as_art_classifier(_Compiled(model))
    # loss_type="cross_entropy": ART wraps the network again with its own per-image
    # cross-entropy, from logits once it has seen that ours do not output probabilities.
    attack = AutoProjectedGradientDescent(
        classifier, norm=art_norm(norm), eps=eps, eps_step=step_size or 2 * eps, max_iter=steps,
        targeted=target is not None, nb_random_init=restarts, batch_size=batch_size, loss_type="cross_entropy",
        verbose=False,
    )
    y = None if target is None else _one_hot(np.full(len(x), target), classifier.nb_classes)
    # ART takes no seed: the random starts (art.utils.random_sphere) come from numpy's global generator.
    with seeded_globals(seed):
        return attack.generate(x=x, y=y).astype(np.float32)


def autoattack(model, x, *, eps, norm="inf", target=None, batch_size=128, seed=0):
    """AutoAttack (Croce & Hein 2020): ART's default ensemble, run one member after the other
    on the images still classified as the model's own clean prediction, each image keeping the
    first success that lies within the eps-ball.

    The members are those ART 1.20's AutoAttack builds (untargeted): APGD-CE and APGD-DLR
    (100 iterations, 5 random starts each; initial step 2 eps as in the paper, where ART's
    default is 0.1 whatever eps), DeepFool (100
    iterations, overshoot 1e-3; a minimal L2 attack whose result counts only inside the
    eps-ball) and Square (score-based, 5000 queries, 5 restarts); all four work on our
    TensorFlowV2Classifier. ART's AutoAttack.generate itself imports the optional package
    `multiprocess` (not installed) even when run serially, so the serial untargeted loop is
    ours, calling ART's own per-member step (auto_attack.run_attack). This is not the
    reference AutoAttack's APGD-T / FAB-T: ART's targeted mode would rerun every member against
    each of the K - 1 other classes, Square included, so `target` must be None (it is taken so
    that every attack is called alike). Random starts and Square's squares are drawn with
    `seed`. Needs 3 or more classes (DLR). Images no member breaks come back unchanged.
    Expensive: up to 1000 APGD gradient steps per image that resists, then 25 000 Square
    queries (measured: 6 resisting 8 px images of 24 cost about 2 minutes on 2 CPU cores).
    """
    if target is not None:
        raise ConfigError("attack autoattack has no targeted mode")
    classifier = as_art_classifier(_Compiled(model))
    ensemble = AutoAttack(classifier, norm=art_norm(norm), eps=eps, eps_step=2 * eps, batch_size=batch_size,
                          targeted=False).attacks
    x_adv = np.array(x, dtype=np.float32)
    labels = classifier.predict(x_adv, batch_size=batch_size).argmax(axis=1)
    y = _one_hot(labels, classifier.nb_classes)
    robust = np.ones(len(x_adv), dtype=bool)
    with seeded_globals(seed):
        for member in ensemble:
            if not robust.any():
                break
            member.set_params(verbose=False)  # ART builds them with progress bars on
            x_adv, robust = run_attack(x_adv, y, robust, member, classifier, norm=art_norm(norm), eps=eps)
    return x_adv.astype(np.float32)
