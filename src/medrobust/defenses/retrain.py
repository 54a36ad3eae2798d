"""Adversarial retraining (modify the data): the thesis' rounds of offline adversarial examples,
and Madry-style on-the-fly adversarial training as the stronger variant."""

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from .. import attacks
from .. import stopping
from ..config import DefendConfig, TrainConfig
from ..errors import ConfigError
from ..models.training import check_finite, class_weights, fit, optimizer, training_dataset
from .spec import Hooks, training_config

if TYPE_CHECKING:
    from ..data import Dataset
    from .defended import DefendedClassifier

log = logging.getLogger(__name__)

ON_THE_FLY_METHODS = ("fgsm", "pgd")


def adversarial_set(model: "keras.Model", x: np.ndarray, y: np.ndarray, methods: Sequence[str], eps: float,
                    ratio: float, rng: np.random.Generator, attack_params: dict[str, dict[str, Any]] | None = None,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Perturb a random `ratio` of (x, y) with the attacks `methods` (the chosen images split
    evenly between them), each crafted on `model` as it is now. attack_params: {method:
    {parameter: value}} for the methods that take some (uap_fast: max_steps); seed goes to
    the attacks that take one. Returns (x_adv, y_adv)."""
    chosen = rng.choice(len(x), size=max(1, round(ratio * len(x))), replace=False)
    parts = np.array_split(chosen, len(methods))
    xs, ys = [], []
    for method, idx in zip(methods, parts):
        if len(idx) == 0:
            continue
        params = (attack_params or {}).get(method, {})
        x_adv, _ = attacks.craft(method, model, x[idx], eps, y=y[idx], seed=seed, **params)
        xs.append(x_adv)
        ys.append(y[idx])
    return np.concatenate(xs), np.concatenate(ys)


def retrain_rounds(model: "keras.Model", x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   train_config: TrainConfig, methods: Sequence[str] = ("fgsm",), eps: float = 2 / 255, rounds: int = 5,
                   ratio: float = 0.5, epochs_per_round: int = 5, seed: int = 0,
                   attack_params: dict[str, dict[str, Any]] | None = None,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list]:
    """The thesis' adversarial retraining, in place on `model`: each round crafts a fresh
    adversarial set from a `ratio` of (x, y) against the current model, adds it to the clean
    images with their true labels and trains `epochs_per_round` epochs (no early stopping:
    x may include the validation images, as in the thesis). Returns the per-epoch history."""
    rng = np.random.default_rng(seed)
    config = replace(train_config, epochs=epochs_per_round, patience=0)
    history = {}
    for r in range(rounds):
        x_adv, y_adv = adversarial_set(model, x, y, methods, eps, ratio, rng, attack_params, seed)
        log.info("retrain round %d/%d: %d adversarial + %d clean images", r + 1, rounds, len(x_adv), len(x))

        def hook(epoch, logs, offset=r * epochs_per_round):
            if on_epoch:
                on_epoch(epoch + offset, logs)

        h = fit(model, np.concatenate([x, x_adv]), np.concatenate([y, y_adv]), x_val, y_val,
                replace(config, seed=seed + r), on_epoch=hook)
        for key, values in h.items():
            history.setdefault(key, []).extend(values)
        history.setdefault("round", []).extend([r + 1] * len(h["loss"]))
    return history


def train_on_the_fly(model: "keras.Model", x: np.ndarray, y: np.ndarray, train_config: TrainConfig,
                     method: str = "fgsm", eps: float = 2 / 255, epochs: int = 5, pgd_steps: int = 5, seed: int = 0,
                     on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Madry-style adversarial training, in place: every batch is attacked afresh against the
    current weights (FGSM, or PGD with `pgd_steps` steps of eps/4 from a random start) and the
    model learns on the clean and the adversarial half together. Our own loop, since crafting
    through ART per batch would leave TensorFlow's graph each step. Returns {'loss': [...]}."""
    if method not in ON_THE_FLY_METHODS:
        raise ConfigError(f"on-the-fly adversarial training supports {' and '.join(ON_THE_FLY_METHODS)}, "
                          f"got {method!r}")
    n_classes = int(model.output_shape[-1])
    weights = class_weights(y, n_classes, train_config.class_weight)
    weight_of = tf.constant([weights[k] for k in range(n_classes)], dtype=tf.float32)
    steps = math.ceil(len(x) / train_config.batch_size)
    opt = optimizer(train_config.learning_rate, steps * epochs, train_config.weight_decay)
    opt.build(model.trainable_variables)  # its slots made inside train_step's trace would make TensorFlow trace it twice
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    data = training_dataset(x, y, train_config.batch_size, seed, train_config.augment)
    n_steps = 1 if method == "fgsm" else pgd_steps
    step_size = eps if method == "fgsm" else eps / 4

    @tf.function
    def attack(xb, yb, start):
        x_adv = tf.clip_by_value(xb + start, 0.0, 1.0)
        for _ in range(n_steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = loss_fn(yb, model(x_adv, training=False))
            x_adv = x_adv + step_size * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - eps, xb + eps), 0.0, 1.0)
        return x_adv

    @tf.function
    def train_step(xb, yb):
        start = tf.zeros_like(xb) if method == "fgsm" else tf.random.uniform(tf.shape(xb), -eps, eps, seed=seed)
        x_all = tf.concat([xb, attack(xb, yb, start)], axis=0)
        y_all = tf.concat([yb, yb], axis=0)
        with tf.GradientTape() as tape:
            loss = loss_fn(y_all, model(x_all, training=True), sample_weight=tf.gather(weight_of, y_all))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    history = {"loss": []}
    batches = iter(data)
    for epoch in range(epochs):
        total = 0.0
        for _ in range(steps):
            stopping.checkpoint()
            xb, yb = next(batches)
            total += float(train_step(xb, tf.cast(yb, tf.int32)))
        history["loss"].append(total / steps)
        check_finite(model, history["loss"][-1], f"adversarial training epoch {epoch + 1}")
        log.info("adversarial training epoch %d/%d: loss %.4f", epoch + 1, epochs, history["loss"][-1])
        if on_epoch:
            on_epoch(epoch, {"loss": history["loss"][-1]})
    return history


def build(classifier: "DefendedClassifier", data: "Dataset", config: DefendConfig,
          hooks: Hooks) -> "DefendedClassifier":
    """Registry builder: the classifier's network adversarially retrained (in place) on
    `config.retrain_on`, in rounds (the thesis) or on the fly (Madry) as `config.on_the_fly` says."""
    x, y = data.x["train"], data.y["train"]
    if config.retrain_on == "train+val":
        x, y = np.concatenate([x, data.x["val"]]), np.concatenate([y, data.y["val"]])
    train, on_epoch = training_config(config), partial(hooks.on_epoch, "retrain")
    if config.on_the_fly:
        log.info("on-the-fly adversarial training (%s), %d epochs", config.retrain_attacks[0],
                 config.rounds * config.epochs_per_round)
        history = train_on_the_fly(classifier.network, x, y, train, config.retrain_attacks[0], config.retrain_eps,
                                   config.rounds * config.epochs_per_round, seed=config.seed, on_epoch=on_epoch)
    else:
        attack_params = {"uap_fast": {"max_steps": config.uap_max_steps}}
        history = retrain_rounds(classifier.network, x, y, data.x["val"], data.y["val"], train,
                                 config.retrain_attacks, config.retrain_eps, config.rounds, config.ratio,
                                 config.epochs_per_round, config.seed, attack_params, on_epoch=on_epoch)
    hooks.on_history("retrain", history)
    return replace(classifier)
