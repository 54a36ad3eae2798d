"""Seeded, deterministic training with class weights, augmentation and early stopping."""

import contextlib
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import keras
import tensorflow as tf

from .. import metrics, stopping
from ..config import CLASS_WEIGHTS, TrainConfig
from ..errors import ConfigError, TrainingError
from . import tracing
from .zoo import backbone, pretrained_batchnorm

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def class_weights(y: np.ndarray, n_classes: int, mode: str = "balanced") -> dict[int, float]:
    """{class: weight} for the loss, the thesis' answer to HAM10000's imbalance.

    balanced: n / (K * n_k), so every class carries the same total weight (sklearn's
    "balanced"); sqrt: its square root, a softer push away from the majority class; none: 1.
    Classes absent from y get weight 0 (nothing to weigh).
    """
    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode == "none":
        w = present.astype(np.float64)
    elif mode != "balanced":
        raise ConfigError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {mode!r}")
    return {k: float(v) for k, v in enumerate(w)}


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each image of a (B, H, W, C) batch gets one of the 8 flips and 90-degree rotations,
    drawn from a stateless seed: a dermoscopic image has no up, down, left or right.
    Done on the whole batch at once (three selects) rather than image by image, which on two
    cores costs about as much as a training step."""
    draws = tf.random.stateless_uniform([3, tf.shape(images)[0], 1, 1, 1], seed, 0, 2, dtype=tf.int32) > 0
    images = tf.where(draws[0], tf.transpose(images, [0, 2, 1, 3]), images)
    images = tf.where(draws[1], tf.reverse(images, axis=[2]), images)
    return tf.where(draws[2], tf.reverse(images, axis=[1]), images)


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool = True) -> tf.data.Dataset:
    """Endless shuffled (and augmented) batches; each batch has its own stateless seed, so a
    run is reproducible and every epoch sees fresh augmentations."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size)
    if augment:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
            lambda xy, i: (augment_batch(xy[0], tf.stack([tf.cast(seed, tf.int64), i])), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_logits(model: "keras.Model", x: np.ndarray, batch_size: int = 256, *, direct: bool = False) -> np.ndarray:
    """Logits of shape (N, K) for images x of shape (N, H, W, 3), in batches of `batch_size`
    through the network's compiled forward pass (tracing.forward: traced once per network;
    model.predict sets up a data pipeline per call, 0.07 s for 8 images), on one device: a
    network built under a MirroredStrategy is not split across its replicas here. A network whose
    output is not finite (diverged weights) raises TrainingError rather than answer argmax 0 for
    every image. direct: one eager call of the network on all of x, for a served request's few
    images, which need no trace on a freshly loaded model (benchmarks/README.md)."""
    x = np.asarray(x, dtype=np.float32)
    if direct:
        logits = np.asarray(model(x, training=False))
    elif not len(x):
        logits = np.zeros((0, int(model.output_shape[-1])), np.float32)
    else:
        forward = tracing.forward(model)
        logits = np.concatenate([forward(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)])
    if not np.isfinite(logits).all():
        raise TrainingError(f"network {model.name} outputs non-finite logits for {int((~np.isfinite(logits)).any(axis=1).sum())} "
                            f"of {len(logits)} images: its weights diverged")
    return logits


def check_finite(model: "keras.Model", loss: float, where: str) -> None:
    """Raise TrainingError naming `where` (e.g. 'train epoch 3') if the loss or any weight is not finite."""
    if not np.isfinite(loss):
        raise TrainingError(f"training diverged at {where}: loss is {loss}; lower the learning rate")
    bad = [w.path for w in model.weights if not np.isfinite(np.asarray(w)).all()]
    if bad:
        raise TrainingError(f"training diverged at {where}: {len(bad)} weight tensors are not finite ({bad[0]}, ...); "
                            "lower the learning rate")


class ValidationMetrics(keras.callbacks.Callback):
    """Adds val_loss, val_accuracy and val_macro_recall to each epoch's logs from one pass over
    the validation images, so early stopping can watch what the task cares about (macro
    recall, not the majority class)."""

    def __init__(self, x_val, y_val, n_classes, batch_size=256):
        super().__init__()
        self.x_val, self.y_val, self.n_classes, self.batch_size = x_val, y_val, n_classes, batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logits = predict_logits(self.model, self.x_val, self.batch_size)
        cm = metrics.confusion_matrix(self.y_val, logits.argmax(axis=1), self.n_classes)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(self.y_val, logits)
        logs["val_loss"] = float(loss)
        logs["val_accuracy"] = metrics.accuracy(cm)
        logs["val_macro_recall"] = metrics.macro_recall(cm)


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch (in place of Keras' own output): the phase, the epoch and its figures."""

    SHOWN = ("loss", "accuracy", "categorical_accuracy", "val_loss", "val_accuracy", "val_macro_recall")

    def __init__(self, phase, epochs):
        super().__init__()
        self.phase, self.epochs, self.start = phase, epochs, time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        figures = "  ".join(f"{k.replace('categorical_', '')} {float(v):.4f}" for k, v in (logs or {}).items()
                            if k in self.SHOWN)
        log.info("%s epoch %d/%d  %s  (%.0f s)", self.phase, epoch + 1, self.epochs, figures,
                 time.perf_counter() - self.start)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with TrainingError at the end of the first epoch whose loss or weights are
    not finite, so a diverged network is never evaluated, logged as a model or registered."""

    def __init__(self, phase):
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        check_finite(self.model, float((logs or {}).get("loss", 0.0)), f"{self.phase} epoch {epoch + 1}")


class StopOnRequest(keras.callbacks.Callback):
    """Stops training before the batch after SIGTERM (stopping.py), not at the end of an epoch,
    which at 224 px on a CPU lasts minutes. At a batch's beginning, not its end: a batch-end hook
    makes Keras wait for every batch's figures."""

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        stopping.checkpoint()


class EpochHook(keras.callbacks.Callback):
    def __init__(self, fn, offset=0):
        super().__init__()
        self.fn, self.offset = fn, offset

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.fn(epoch + self.offset, dict(logs or {}))


def distribution_scope(distribute: str) -> contextlib.AbstractContextManager:
    """The context a network is built and trained in: "mirrored" is tf.distribute's
    MirroredStrategy (one replica per visible GPU, the CPU when there is none; Keras splits
    each batch across them); "none" is no strategy."""
    if distribute == "none":
        return contextlib.nullcontext()
    if distribute != "mirrored":
        raise ConfigError(f"distribute must be none or mirrored, got {distribute!r}")
    strategy = tf.distribute.MirroredStrategy()
    log.info("training on %d replica(s) with MirroredStrategy", strategy.num_replicas_in_sync)
    return strategy.scope()


def optimizer(learning_rate: float, total_steps: int, weight_decay: float = 0.0) -> "keras.optimizers.Optimizer":
    """Adam (AdamW with weight_decay > 0) on a cosine decay from learning_rate over total_steps."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(total_steps, 1), alpha=0.05)
    if weight_decay > 0:
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    return keras.optimizers.Adam(schedule)


def _compile(model, learning_rate, total_steps, x_one, y_one, loss=None, weight_decay=0.0):
    """Compile for fit; x_one, y_one: one training example (1, ...), to build the metrics with."""
    sparse = loss is None
    model.compile(
        optimizer=optimizer(learning_rate, total_steps, weight_decay),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy" if sparse else "categorical_accuracy"],
    )
    # The optimizer's slots and the metrics' variables made now, eagerly. Left to Keras (which
    # builds them early only under a distribution strategy) they are made inside the traced train
    # step: each slot is lifted out of the graph (a quarter of a small network's fit time), and a
    # variable made in a tf.function's first trace makes TensorFlow trace it a second time (0.7 s
    # of a small network's 1.8 s fit). fit resets the metrics before its first epoch.
    model.optimizer.build(model.trainable_variables)
    model.compute_metrics(x_one, y_one, model(x_one, training=False))


def fit(model: "keras.Model", x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        config: TrainConfig, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        loss: "keras.losses.Loss | None" = None, labels_for_weights: np.ndarray | None = None) -> dict[str, list]:
    """Train `model` in place as TrainConfig `config` says; returns the per-epoch history.

    With a pretrained backbone the base is frozen for `head_epochs` (only the new head learns,
    so its random gradients cannot wreck the ImageNet features), then everything is fine-tuned
    at `learning_rate * fine_tune_lr_factor`, its BatchNorm layers still frozen. Early stopping watches validation macro recall
    and restores the best epoch's weights. on_epoch(epoch, logs) is called after every epoch.
    `loss` replaces the sparse cross-entropy, e.g. for soft targets y_train of shape (N, K);
    class weights then come from the integer `labels_for_weights` (Keras weighs each soft
    target by its argmax class).
    Returns {metric: [value per epoch]} over all phases.
    """
    n_classes = int(model.output_shape[-1])
    weights = class_weights(y_train if labels_for_weights is None else labels_for_weights, n_classes,
                            config.class_weight)
    steps = math.ceil(len(x_train) / config.batch_size)
    data = training_dataset(x_train, y_train, config.batch_size, config.seed, config.augment)
    base = backbone(model)
    phases = []
    if base is not None and config.weights not in (None, "none") and config.head_epochs > 0:
        phases.append(("head", config.head_epochs, config.learning_rate, False))
        phases.append(("fine_tune", config.epochs, config.learning_rate * config.fine_tune_lr_factor, True))
    else:
        phases.append(("train", config.epochs, config.learning_rate, True))
    history, done = {}, 0
    for name, epochs, lr, base_trainable in phases:
        if base is not None:
            base.trainable = base_trainable
            # Pretrained BatchNorm stays frozen, in inference mode, also when the base is unfrozen
            # (fine-tuning, retraining): Keras 3's fit calls the model with training=True, which
            # overrides the backbone's training=False (keras-team/keras#20285).
            for layer in pretrained_batchnorm(model):
                layer.trainable = False
        _compile(model, lr, epochs * steps, x_train[:1], y_train[:1], loss, weight_decay=config.weight_decay)
        callbacks = [StopOnRequest(), StopOnNonFinite(name), ValidationMetrics(x_val, y_val, n_classes),
                     EpochLog(name, epochs)]
        stopper = None
        if name != "head" and config.patience:  # patience 0: every epoch, the last weights kept
            stopper = keras.callbacks.EarlyStopping(monitor="val_macro_recall", mode="max", patience=config.patience,
                                                    restore_best_weights=True)
            callbacks.append(stopper)
        if on_epoch:
            callbacks.append(EpochHook(on_epoch, offset=done))
        h = model.fit(
            data, steps_per_epoch=steps, epochs=epochs,
            class_weight=weights, callbacks=callbacks, verbose=0, shuffle=False,
        )
        if stopper is not None and stopper.stopped_epoch:
            log.info("early stopping after epoch %d: weights of epoch %d kept (val macro recall %.4f)",
                     stopper.stopped_epoch + 1, stopper.best_epoch + 1, stopper.best)
        for key, values in h.history.items():
            history.setdefault(key.replace("categorical_accuracy", "accuracy"), []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([name] * len(h.history["loss"]))
        done += len(h.history["loss"])
    return history
