"""Universal adversarial perturbations: one perturbation shared by every image.

`uap` is ART's UniversalPerturbation (Moosavi-Dezfooli et al. 2017), the thesis' attack: it
visits one image at a time, in random order, and runs an inner attack on it, which is why it
is slow.
`uap_fast` is ours: the shared perturbation climbs the loss by signed-gradient steps over
mini-batches of the whole attack set, projected onto the budget after each step, and stops at
a target fooling rate or a step limit.
"""

import numpy as np
import keras
import tensorflow as tf
from art.attacks.evasion import UniversalPerturbation

from .. import stopping
from ..errors import ConfigError
from ..models.training import predict_logits
from .art_wrapper import CompiledForward, as_art_classifier, seeded_globals
from .budget import art_norm, check_norm, project
from ..models import tracing


UAP_ATTACKERS = ("fgsm", "pgd", "deepfool")


def uap(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf", target: int | None = None,
        uap_attacker: str = "fgsm", attacker_eps: float | None = None, uap_delta: float = 0.2, uap_max_iter: int = 5,
        batch_size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ART's UAP with inner attack `uap_attacker` (fgsm | pgd | deepfool, of size attacker_eps,
    default eps); stops at fooling rate 1 - uap_delta or after uap_max_iter passes, visiting the
    images in an order drawn with `seed`, fooling measured against the true labels y. Untargeted only (it takes `target` so that every
    attack is called alike). Returns (x_adv, perturbation of shape (1, H, W, C))."""
    if uap_attacker not in UAP_ATTACKERS:
        raise ConfigError(f"uap_attacker must be one of {', '.join(UAP_ATTACKERS)}, got {uap_attacker!r}")
    if target is not None:
        raise ConfigError("attack uap has no targeted mode")
    params = {"fgsm": {"eps": attacker_eps or eps, "norm": art_norm(norm)},
              "pgd": {"eps": attacker_eps or eps, "norm": art_norm(norm), "verbose": False},
              "deepfool": {"verbose": False}}[uap_attacker]
    attack = UniversalPerturbation(
        as_art_classifier(CompiledForward(model)), attacker=uap_attacker, attacker_params=params, delta=uap_delta,
        max_iter=uap_max_iter, eps=eps, norm=art_norm(norm), batch_size=batch_size, verbose=False,
    )
    # ART takes no seed: it visits the images in an order from Python's global generator
    # (random.sample), so seeding it right before generate makes the perturbation reproducible.
    with seeded_globals(seed):
        x_adv = attack.generate(x, y=np.eye(int(model.output_shape[-1]), dtype=np.float32)[np.asarray(y)])
    return x_adv, np.asarray(attack.noise, dtype=np.float32)


def _predict(model, x, batch_size):
    return predict_logits(model, x, batch_size).argmax(axis=1)


def _uap_gradient(model):
    """The compiled gradient of the mean cross-entropy over a batch with respect to the shared
    perturbation v (1, H, W, C), the batch xb (N, H, W, C) and its labels yb (N,) int64."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    batch = tracing.images(model)

    @tf.function(input_signature=[tf.TensorSpec([1, *model.input_shape[1:]], tf.float32), batch,
                                  tracing.per_image(tf.int64)])
    def gradient(v, xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(v)
            logits = model(tf.clip_by_value(xb + v, 0.0, 1.0), training=False)
            loss = loss_fn(yb, logits)
        return tape.gradient(loss, v)

    return gradient


def uap_fast(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
             target: int | None = None, step_size: float | None = None, max_steps: int = 200,
             target_fooling_rate: float = 0.8, batch_size: int = 128, seed: int = 0,
             eval_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Batched universal perturbation. Returns (x_adv, perturbation of shape (1, H, W, C)).

    Untargeted, it raises the cross-entropy of the true labels y (fooling: pred(x + v) != y);
    targeted, it lowers the
    cross-entropy of class `target`. One step = one mini-batch: v += step_size * sign(grad),
    then v is projected onto the eps-ball. The fooling rate over all of x is checked every
    `eval_every` steps; the best perturbation seen is returned.
    """
    norm = check_norm(norm)
    step_size = step_size or eps / 5
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(y) if target is None else np.full(len(x), target)
    sign = 1.0 if target is None else -1.0
    gradient = tracing.per_network(model, "uap_fast", _uap_gradient)

    def fooling(v):
        adv = _predict(model, np.clip(x + v, 0.0, 1.0), batch_size)
        return float(np.mean(adv != labels)) if target is None else float(np.mean(adv == target))

    v = np.zeros((1,) + x.shape[1:], dtype=np.float32)
    best_v, best_rate = v, 0.0
    order = rng.permutation(len(x))
    cursor = 0
    for step in range(1, max_steps + 1):
        stopping.checkpoint()
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(x)), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        g = gradient(tf.constant(v, tf.float32), tf.constant(x[idx]), tf.constant(labels[idx], tf.int64)).numpy()
        if norm == "inf":
            v = v + sign * step_size * np.sign(g)
        else:
            v = v + sign * step_size * g / max(float(np.linalg.norm(g)), 1e-12)
        v = project(v, eps, norm)
        if step % eval_every == 0 or step == max_steps:
            rate = fooling(v)
            if rate > best_rate:
                best_v, best_rate = v.copy(), rate
            if rate >= target_fooling_rate:
                break
    return np.clip(x + best_v, 0.0, 1.0).astype(np.float32), best_v
