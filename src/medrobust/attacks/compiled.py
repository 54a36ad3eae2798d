"""PGD and APGD, compiled: ours.

ART's ProjectedGradientDescent and AutoProjectedGradientDescent call the network eagerly and
do their bookkeeping in numpy, so on CPU they run at about a third of the network's
forward+backward rate (benchmarks/README.md). Here one tf.function does a whole iteration
(forward, backward, step, projection, best-point bookkeeping); Python only counts iterations
and, for APGD, halves step sizes at its checkpoints. tests/steps/test_counting.py checks the
ensemble against ART's APGD on the same images; benchmarks/bench_attacks.py compares each with ART's.

Every loss is per image, (logits (N, K), labels (N,), targets (N,)) -> (N,), and is raised:
    ce             cross-entropy of the true label (untargeted)
    dlr            Croce & Hein's difference of logits ratio (untargeted)
    dlr_targeted   their targeted DLR, towards `targets` (APGD-T)
`margin_loss(mask)` builds the health attack's: the log-odds of the classes in `mask` against
the rest, which moves the summed probability of those classes directly.
"""

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from .. import stopping
from ..errors import ConfigError
from ..models.training import predict_logits
from ..models import tracing

if TYPE_CHECKING:
    import keras

_BIG = 1e9


def ce_loss(logits: tf.Tensor, labels: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def dlr_loss(logits: tf.Tensor, labels: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): scale-free, so it does not saturate (Croce & Hein 2020)."""
    ordered = tf.sort(logits, axis=1, direction="DESCENDING")
    own = tf.gather(logits, labels, batch_dims=1)
    other = tf.reduce_max(logits - _BIG * tf.one_hot(labels, tf.shape(logits)[1]), axis=1)
    return -(own - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def dlr_targeted_loss(logits: tf.Tensor, labels: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): the targeted DLR of APGD-T (needs 4+ classes)."""
    ordered = tf.sort(logits, axis=1, direction="DESCENDING")
    own = tf.gather(logits, labels, batch_dims=1)
    target = tf.gather(logits, targets, batch_dims=1)
    return -(own - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def margin_loss(mask: np.ndarray) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """A loss raising log P(classes in `mask`) - log P(the others), per image: mask bool (K,).
    With mask = the benign classes it lowers the malignancy score of every image it attacks.
    The same function for the same mask, so that its compiled steps are reused (`trace`)."""
    return _margin_loss(tuple(bool(b) for b in np.asarray(mask, dtype=bool)))


@functools.cache
def _margin_loss(mask):
    mask = tf.constant(mask)

    def loss(logits, labels, targets):
        inside = tf.reduce_logsumexp(tf.where(mask, logits, -_BIG), axis=1)
        outside = tf.reduce_logsumexp(tf.where(mask, -_BIG, logits), axis=1)
        return inside - outside

    return loss


LOSSES = {"ce": ce_loss, "dlr": dlr_loss, "dlr_targeted": dlr_targeted_loss}


def _fooled(logits, labels):
    return tf.argmax(logits, axis=1, output_type=tf.int32) != labels


def _compiled(model, loss_fn):
    """The compiled step of one model and one loss, for a batch of any size. One function, not
    a second for the starting point's gradient: tracing costs more than a small batch's run,
    and a step of size 0 from the start computes the same (`_run_batch`)."""
    batch, per_image, labels = tracing.images(model), tracing.per_image(), tracing.per_image(tf.int32)

    def forward_backward(x_adv, labels, targets):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model(x_adv, training=False)
            loss = loss_fn(logits, labels, targets)
            total = tf.reduce_sum(loss)  # per-image losses: their sum's gradient is each image's own
        return logits, loss, tape.gradient(total, x_adv)

    @tf.function(input_signature=[batch, batch, batch, batch, per_image, tracing.SCALAR, tracing.SCALAR, labels, labels,
                                  batch, per_image, tracing.per_image(tf.bool), batch])
    def step(x, x_adv, x_prev, grad, step_size, momentum, eps, labels, targets, best, loss_best, found, fooled_at):
        """One APGD iteration (PGD when momentum is 1): the signed step, projection, momentum,
        then the loss and gradient at the new point and the bookkeeping of the best points."""
        lower, upper = tf.maximum(x - eps, 0.0), tf.minimum(x + eps, 1.0)
        z = tf.clip_by_value(x_adv + step_size[:, None, None, None] * tf.sign(grad), lower, upper)
        new = tf.clip_by_value(x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev), lower, upper)
        logits, loss, new_grad = forward_backward(new, labels, targets)
        better = loss > loss_best
        best = tf.where(better[:, None, None, None], new, best)
        loss_best = tf.where(better, loss, loss_best)
        fooled = _fooled(logits, labels)
        first = fooled & ~found
        fooled_at = tf.where(first[:, None, None, None], new, fooled_at)
        return new, x_adv, new_grad, loss, best, loss_best, found | fooled, fooled_at, better

    return step


def trace(model: "keras.Model", loss: str | Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable:
    """The compiled step of `model` and `loss` (a LOSSES name or a loss function), made once
    per model and loss (models/tracing.py). A loss function is known by its
    identity: pass a module-level or memoised one (margin_loss), not a new closure per call, or
    every call traces and keeps a graph for as long as the network lives."""
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
    return tracing.per_network(model, ("apgd", loss_fn), lambda network: _compiled(network, loss_fn))


def checkpoints(steps: int) -> list[tuple[int, int]]:
    """The iterations at which APGD may halve an image's step size (Croce & Hein 2020, eq. 4 as
    their code rounds it): after 0.22 * steps, then ever shorter intervals, none shorter than
    0.06 * steps, each 0.03 * steps shorter than the one before."""
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, at, interval = [], 0, first
    while at + interval <= steps:
        at += interval
        out.append((at, interval))
        interval = max(interval - shrink, shortest)
    return out


def _start(x, eps, rng):
    """AutoAttack's L-inf start: x + eps * t / max|t| with t uniform in [-1, 1], per image."""
    t = rng.uniform(-1.0, 1.0, size=x.shape).astype(np.float32)
    t /= np.abs(t).reshape(len(t), -1).max(axis=1).reshape(-1, 1, 1, 1) + 1e-12
    return np.clip(x + eps * t, 0.0, 1.0).astype(np.float32)


def _run_batch(step, x, labels, targets, *, eps, steps, step_size, momentum, adaptive, x_start):
    """One random start of APGD (adaptive) or PGD on one batch. Returns numpy
    (fooled_at, found, best, loss_best): the first point that changed the prediction from
    `labels` and whether there was one, and the point of highest loss."""
    n = len(x)
    eps_t = tf.constant(eps, tf.float32)
    x_t, labels_t, targets_t = tf.constant(x), tf.constant(labels, tf.int32), tf.constant(targets, tf.int32)
    x_adv = tf.constant(x_start)
    # The starting point's loss and gradient: a step of size 0 with momentum 1 stays at x_adv
    # (inside the ball: z - x_adv is exactly 0), and any loss beats -inf, so best is the start.
    zero, minus_inf = tf.zeros_like(x_adv), tf.fill([n], -np.inf)
    x_adv, _, grad, loss, best, loss_best, found, fooled_at, _ = step(
        x_t, x_adv, x_adv, zero, tf.zeros([n]), tf.constant(1.0), eps_t, labels_t, targets_t, x_adv, minus_inf,
        tf.zeros([n], tf.bool), x_adv)
    grad_best = grad
    sizes = np.full(n, step_size, np.float32)
    x_prev = x_adv
    history = [loss.numpy()]
    marks = dict(checkpoints(steps)) if adaptive else {}
    best_at_check, reduced_at_check = loss.numpy(), np.ones(n, bool)
    for i in range(1, steps + 1):
        stopping.checkpoint()
        m = tf.constant(1.0 if (i == 1 or not adaptive) else momentum, tf.float32)
        x_adv, x_prev, grad, loss, best, loss_best, found, fooled_at, better = step(
            x_t, x_adv, x_prev, grad, tf.constant(sizes), m, eps_t, labels_t, targets_t, best, loss_best, found,
            fooled_at)
        if adaptive:
            grad_best = tf.where(better[:, None, None, None], grad, grad_best)
            history.append(loss.numpy())
        if i in marks:
            interval = marks[i]
            lb = loss_best.numpy()
            # condition 1: the loss rose in fewer than 75 % of the steps since the last checkpoint
            rises = np.sum([history[j] > history[j - 1] for j in range(i - interval + 1, i + 1)], axis=0)
            halve = rises <= 0.75 * interval
            # condition 2: the step was not halved last time and the best loss has not moved since
            halve |= ~reduced_at_check & (best_at_check >= lb)
            reduced_at_check, best_at_check = halve, lb
            if halve.any():
                sizes[halve] /= 2.0
                h = tf.constant(halve)[:, None, None, None]
                x_adv = tf.where(h, best, x_adv)  # restart the halved images from their best point
                grad = tf.where(h, grad_best, grad)
                x_prev = tf.where(h, best, x_prev)
    return fooled_at.numpy(), found.numpy(), best.numpy(), loss_best.numpy()


def run(model: "keras.Model", x: np.ndarray, labels: np.ndarray, *, eps: float,
        loss: str | Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor] = "ce", targets: np.ndarray | None = None,
        steps: int = 100, restarts: int = 1, step_size: float | None = None, adaptive: bool = True,
        momentum: float = 0.75, random_start: bool = True, batch_size: int = 128, seed: int = 0,
        keep: str = "fooled") -> np.ndarray:
    """APGD (adaptive=True, Croce & Hein 2020) or PGD with `restarts` random starts, L-inf.

    model: Keras, [0, 1] images in, logits out; x: (N, H, W, 3) float32; labels: (N,) the
    true labels the loss is measured against; targets: (N,) target classes for dlr_targeted.
    loss: a LOSSES name or a per-image loss function (see module doc), raised by the attack.
    step_size: APGD's initial step (default 2 eps, as the paper) or PGD's fixed one (eps / 4).
    keep: "fooled" returns, per image, the first point whose prediction left its label (else
    the point of highest loss; a later restart runs only on images not yet fooled); "loss"
    returns the point of highest loss over every restart (for losses whose goal is not a
    change of class, such as the health margin). Random starts are drawn with `seed`.
    """
    if keep not in ("fooled", "loss"):
        raise ConfigError(f"keep must be 'fooled' or 'loss', got {keep!r}")
    if restarts < 1 or steps < 1:
        raise ConfigError(f"steps and restarts must be at least 1, got {steps} and {restarts}")
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    targets = labels if targets is None else np.asarray(targets, dtype=np.int32)
    step_size = step_size or (2 * eps if adaptive else eps / 4)
    step = trace(model, loss)
    rng = np.random.default_rng(seed)
    out = x.copy()
    done = np.zeros(len(x), bool)
    best_loss = np.full(len(x), -np.inf)
    for restart in range(restarts):
        starts = _start(x, eps, rng) if (random_start or restart > 0) else x.copy()
        todo = np.flatnonzero(~done) if keep == "fooled" else np.arange(len(x))
        for i in range(0, len(todo), batch_size):
            idx = todo[i:i + batch_size]
            fooled_at, found, best, loss_best = _run_batch(
                step, x[idx], labels[idx], targets[idx], eps=eps, steps=steps, step_size=step_size, momentum=momentum,
                adaptive=adaptive, x_start=starts[idx])
            improved = loss_best > best_loss[idx]
            out[idx[improved]] = best[improved]
            best_loss[idx[improved]] = loss_best[improved]
            if keep == "fooled":  # a point off the label beats any loss
                out[idx[found]] = fooled_at[found]
                done[idx[found]] = True
    return out


def top_targets(logits: np.ndarray, labels: np.ndarray, n_targets: int) -> np.ndarray:
    """(n_targets, N) target classes per image: the highest-scoring classes other than the
    label, best first (APGD-T attacks each in turn)."""
    logits = np.array(logits, dtype=np.float64)
    logits[np.arange(len(labels)), labels] = -np.inf
    order = np.argsort(-logits, axis=1, kind="stable")
    return order[:, :n_targets].T


def n_targets_for(n_classes: int, wanted: int) -> int:
    return max(1, min(wanted, n_classes - 1))


def predicted_classes(model: "keras.Model", x: np.ndarray) -> np.ndarray:
    """(N,) argmax of the model's logits on x (models.training.predict_logits); empty for no image."""
    return predict_logits(model, x).argmax(axis=1) if len(x) else np.zeros(0, np.int64)


def apgd_targeted(model: "keras.Model", x: np.ndarray, labels: np.ndarray, *, eps: float, n_targets: int = 9,
                  steps: int = 100, restarts: int = 1, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss towards each of the
    `n_targets` highest-scoring other classes in turn (at most K - 1), each run on the images
    no earlier target has moved off their label. Returns adversarial images (N, H, W, 3)."""
    if int(model.output_shape[-1]) < 4:
        raise ConfigError("APGD-T's targeted DLR loss needs 4 or more classes")
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    targets = top_targets(predict_logits(model, x), labels, n_targets_for(int(model.output_shape[-1]), n_targets))
    out = x.copy()
    open_ = np.ones(len(x), bool)
    for k, target in enumerate(targets):
        idx = np.flatnonzero(open_)
        if not len(idx):
            break
        adv = run(model, x[idx], labels[idx], eps=eps, loss="dlr_targeted", targets=target[idx], steps=steps,
                  restarts=restarts, batch_size=batch_size, seed=seed + k)
        out[idx] = adv
        open_[idx[predicted_classes(model, adv) != labels[idx]]] = False
    return out


__all__ = ["LOSSES", "apgd_targeted", "checkpoints", "margin_loss", "predicted_classes", "run", "top_targets", "trace"]

