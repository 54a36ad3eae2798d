"""Gradient attacks on the true labels, ours: FGSM, PGD and APGD (compiled), Square, AutoAttack's
standard ensemble (APGD-CE, APGD-T, Square), the health attack and PGD on the C&W margin loss.
ART's own FGSM, PGD, APGD, Square and AutoAttack, kept to check these against, are in
attacks/art_reference.py.

Untargeted attacks raise the loss of the image's true label `y` (AutoAttack's and
RobustBench's rule): attacking the model's own prediction instead pushes an image the model
already got wrong away from its wrong class, often into the right one, and counts it robust.

ART's FastGradientMethod runs at about a third of the model's forward+backward rate on CPU
(benchmarks/README.md): it predicts in a separate forward pass and takes the gradient eagerly.
`fgsm` does the same arithmetic in one compiled forward+backward per batch; tests/unit/test_attacks.py
checks that it gives ART's images.
"""

import logging
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .. import stopping
from ..data import malignant_mask
from ..errors import ConfigError
from . import compiled
from . import random_search
from ..models import tracing

log = logging.getLogger(__name__)


def _only_inf(name, norm):
    if norm != "inf":
        raise ConfigError(f"attack {name} has no {norm} norm; it supports inf")


def fgsm_step(model: "keras.Model", norm: str = "inf", targeted: bool = False) -> Callable:
    """FGSM's compiled step of `model`, step(images (N, H, W, 3), eps (), labels (N,) int32) ->
    adversarial images; made once per model, norm and mode (models/tracing.py)."""
    return tracing.per_network(model, ("fgsm", norm, targeted), lambda network: _fgsm_step(network, norm, targeted))


def _fgsm_step(model, norm, targeted):
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    n_classes = int(model.output_shape[-1])

    @tf.function(input_signature=[tracing.images(model), tracing.SCALAR, tracing.per_image(tf.int32)])
    def step(xb, eps, labels):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            logits = model(xb, training=False)
            loss = loss_fn(tf.one_hot(labels, n_classes), logits)
        grad = tape.gradient(loss, xb)
        if norm == "inf":
            direction = tf.sign(grad)
        else:  # ART's L2 step: the gradient over its per-image norm (+1e-7, as ART adds)
            direction = grad / (tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3], keepdims=True)) + 1e-7)
        step_ = eps * direction
        return tf.clip_by_value(xb - step_ if targeted else xb + step_, 0.0, 1.0)

    return step


def fgsm(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
         target: int | None = None, batch_size: int = 128) -> np.ndarray:
    """One gradient step of size eps (Goodfellow et al. 2015): the sign of the gradient
    (L-inf) or the gradient scaled to length eps (L2), away from the true label y, or towards
    class index `target`. Our compiled version of ART's FastGradientMethod."""
    step = fgsm_step(model, norm, target is not None)
    x = np.asarray(x, dtype=np.float32)
    labels = np.full(len(x), target) if target is not None else np.asarray(y)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        stopping.checkpoint()
        out[i:i + batch_size] = step(tf.constant(x[i:i + batch_size]), tf.constant(eps, tf.float32),
                                     tf.constant(labels[i:i + batch_size], tf.int32)).numpy()
    return out


def _targeted_ce(logits, labels, targets):
    return -compiled.ce_loss(logits, targets, targets)


def pgd(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf", target: int | None = None,
        steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """Projected gradient descent on the cross-entropy (Madry et al. 2018), L-inf: `steps`
    signed steps of `step_size` (default eps / 4), each projected onto the eps-ball, from a
    random start drawn with `seed` if asked; untargeted on the true labels y (each image keeps
    the first point that moved its prediction off y), or towards `target` (the point of
    lowest target cross-entropy). Ours, compiled (attacks/apgd.py); `pgd_art` is ART's."""
    _only_inf("pgd", norm)
    if target is not None:
        return compiled.run(model, x, np.full(len(x), target), eps=eps, loss=_targeted_ce, steps=steps,
                            restarts=restarts, step_size=step_size, adaptive=False, random_start=random_start,
                            batch_size=batch_size, seed=seed, keep="loss")
    return compiled.run(model, x, y, eps=eps, loss="ce", steps=steps, restarts=restarts, step_size=step_size,
                        adaptive=False, random_start=random_start, batch_size=batch_size, seed=seed)


def _margin_step(model, targeted):
    n_classes = int(model.output_shape[-1])
    batch = tracing.images(model)

    @tf.function(input_signature=[batch, batch, tracing.SCALAR, tracing.SCALAR, tracing.per_image(tf.int32)])
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


def cw_pgd(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
           target: int | None = None, steps: int = 20, step_size: float | None = None, random_start: bool = True,
           batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """PGD on Carlini and Wagner's margin loss (2017), L-inf: `steps` signed steps of
    `step_size` (default eps / 4) raising the largest other logit over the true label's (or
    the target's logit over all others), projected onto the eps-ball, from a uniform random
    start drawn with `seed`. The margin loss does not saturate where cross-entropy does. Ours,
    batched and compiled: ART's CarliniLInfMethod (`cw`) optimises one image at a time."""
    _only_inf("cw_pgd", norm)
    step = tracing.per_network(model, ("cw_pgd", target is not None),
                               lambda network: _margin_step(network, target is not None))
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    alpha = tf.constant(step_size or eps / 4, tf.float32)
    labels_all = np.full(len(x), target) if target is not None else np.asarray(y)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        x0 = tf.constant(x[i:i + batch_size])
        labels = tf.constant(labels_all[i:i + batch_size], tf.int32)
        start = x[i:i + batch_size]
        if random_start:
            start = np.clip(start + rng.uniform(-eps, eps, size=start.shape).astype(np.float32), 0, 1)
        xb = tf.constant(start)
        for _ in range(steps):
            stopping.checkpoint()
            xb = step(xb, x0, tf.constant(eps, tf.float32), alpha, labels)
        out[i:i + batch_size] = xb.numpy()
    return out


def apgd(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
         target: int | None = None, steps: int = 100, loss: str = "ce", restarts: int = 1,
         step_size: float | None = None, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """APGD (Croce & Hein 2020), L-inf: PGD whose per-image step size (initially `step_size`,
    default 2 eps) halves at checkpoints where the loss stopped rising, with momentum 0.75,
    restarting from the best point. loss: ce (APGD-CE) or dlr (APGD-DLR), on the true labels y;
    each image keeps the first point that moved its prediction off y, and later `restarts`
    (random starts drawn with `seed`) run only on the images not yet moved. With `target`: the
    targeted DLR towards that class, keeping the point of highest loss. Ours, compiled
    (attacks/apgd.py); `apgd_art` is ART's."""
    _only_inf("apgd", norm)
    if loss not in ("ce", "dlr"):
        raise ConfigError(f"apgd loss must be ce or dlr, got {loss!r}")
    if target is not None:
        return compiled.run(model, x, y, eps=eps, loss="dlr_targeted", targets=np.full(len(x), target), steps=steps,
                            restarts=restarts, step_size=step_size, batch_size=batch_size, seed=seed, keep="loss")
    return compiled.run(model, x, y, eps=eps, loss=loss, steps=steps, restarts=restarts, step_size=step_size,
                        batch_size=batch_size, seed=seed)


def apgd_t(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
           target: int | None = None, steps: int = 100, n_targets: int = 9, restarts: int = 1, batch_size: int = 128,
           seed: int = 0) -> np.ndarray:
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss towards each of the
    `n_targets` (at most K - 1) highest-scoring classes other than the true label y in turn,
    each on the images no earlier target moved off y. Untargeted as a whole (it takes `target`
    so that every attack is called alike, and refuses one). Ours, compiled."""
    _only_inf("apgd_t", norm)
    if target is not None:
        raise ConfigError("attack apgd_t has no targeted mode (it picks its own targets)")
    return compiled.apgd_targeted(model, x, y, eps=eps, n_targets=n_targets, steps=steps, restarts=restarts,
                                  batch_size=batch_size, seed=seed)


def square(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
           target: int | None = None, queries: int = 5000, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """Square (Andriushchenko et al. 2020): score-based random search over square patches at
    the corners of the eps-ball (initial share p = 0.8, RobustBench's), at most `queries` queries
    an image, on the margin of the true label y; needs no gradient, so it also finds what a
    masked gradient hides. Ours (attacks/random_search.py: one query an iteration, a square per
    image), its random squares drawn with `seed`; `square_art` is ART's."""
    _only_inf("square", norm)
    if target is not None:
        raise ConfigError("attack square has no targeted mode here")
    return random_search.square(model, x, y, eps=eps, queries=queries, batch_size=batch_size, seed=seed)


# AutoAttack's standard version (Croce & Hein 2020, as RobustBench runs it), in its order. FAB-T
# is not run: ART has no FAB, and in Croce & Hein's own tables it rarely lowers robust accuracy
# below what APGD-CE and APGD-T leave (README, "How robust accuracy is counted").
AUTOATTACK_MEMBERS = ("apgd_ce", "apgd_t", "square")


def autoattack(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
               target: int | None = None, steps: int = 100, n_targets: int = 9, queries: int = 5000,
               batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """AutoAttack, standard version (Croce & Hein 2020; RobustBench's settings): APGD-CE
    (`steps` iterations, 1 start), APGD-T (`n_targets` targets, `steps` iterations each) and
    Square (`queries` queries, 1 restart), each run only on the images every earlier member
    left classified as their true label y; an image keeps the first member's success. FAB-T
    is not run (AUTOATTACK_MEMBERS). Images the model gets wrong clean are not attacked.
    All three ours. Returns adversarial images (N, H, W, 3)."""
    _only_inf("autoattack", norm)
    if target is not None:
        raise ConfigError("attack autoattack has no targeted mode")
    y = np.asarray(y)
    out = np.array(x, dtype=np.float32)
    robust = compiled.predicted_classes(model, out) == y
    members = {"apgd_ce": lambda xs, ys, s: compiled.run(model, xs, ys, eps=eps, loss="ce", steps=steps,
                                                         batch_size=batch_size, seed=s),
               "apgd_t": lambda xs, ys, s: compiled.apgd_targeted(model, xs, ys, eps=eps, n_targets=n_targets,
                                                                  steps=steps, batch_size=batch_size, seed=s),
               "square": lambda xs, ys, s: square(model, xs, y=ys, eps=eps, queries=queries, batch_size=batch_size,
                                                  seed=s)}
    for k, name in enumerate(AUTOATTACK_MEMBERS):
        idx = np.flatnonzero(robust)
        if not len(idx):
            break
        adv = members[name](out[idx], y[idx], seed + k)
        broken = compiled.predicted_classes(model, adv) != y[idx]
        out[idx[broken]] = adv[broken]
        robust[idx[broken]] = False
        log.info("autoattack: %s broke %d of %d images, %d robust", name, int(broken.sum()), len(idx),
                 int(robust.sum()))
    return out


def health(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
           target: int | None = None, steps: int = 100, restarts: int = 1, health_map: str = "clinical",
           batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """The attack on the clinical decision itself: APGD (`steps` iterations, `restarts` random
    starts drawn with `seed`) on the log-odds of the benign classes against the malignant ones
    (compiled.margin_loss), which lowers a cancer's malignancy score (the summed probability of
    the malignant classes of `health_map`) as far as the budget allows, and raises a benign
    lesion's: each image keeps its point of most harm to the health call, so the share of
    cancers it gets below any operating threshold is what an attacker achieves against that
    threshold. The true labels y say which images are cancers. Ours, compiled."""
    _only_inf("health", norm)
    if target is not None:
        raise ConfigError("attack health has no target class: it moves the malignancy score")
    malignant = malignant_mask(health_map)
    y = np.asarray(y)
    out = np.array(x, dtype=np.float32)
    for images, raise_ in ((malignant[y], ~malignant), (~malignant[y], malignant)):
        idx = np.flatnonzero(images)
        if len(idx):
            out[idx] = compiled.run(model, out[idx], y[idx], eps=eps, loss=compiled.margin_loss(raise_), steps=steps,
                                    restarts=restarts, batch_size=batch_size, seed=seed, keep="loss")
    return out
