"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): the classifier that answers, for an
image x, the class the network most often gives x + N(0, sigma^2 I), and abstains when the vote
is too close to call. Its prediction is certifiably constant within an L2 radius
sigma * Phi^-1(p_A) of x, where p_A is a lower confidence bound on the top class's share.

    network = train_under_noise(network, data, sigma=0.25, ...)     # the defense: fine-tuning
    counts = vote_counts(classify, x, sigma=0.25, samples=100, seed=0)  # classify: images -> logits
    predicted, radius = certify(network, x, sigma=0.25, n0=100, n=1000, alpha=0.001, seed=0)

The noise is added to the image as it arrives, in front of any input transformation, as ART's
certificate adds it: the certificate is about the classifier that is served. The vote
(prediction, abstention) is ours, vectorised and seeded per image, so a served version answers
an image the same way wherever it sits in a request; certification is ART's TensorFlowV2RandomizedSmoothing.certify (Cohen's
CERTIFY: n0 samples choose the class, n others bound its share by Clopper-Pearson at alpha),
seeded through numpy's global generator, which ART draws from.
"""

import logging
import zlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import keras
import numpy as np
from scipy import stats

from .. import stopping
from ..config import DefendConfig, TrainConfig
from ..models.training import fit
from .spec import Hooks, training_config

if TYPE_CHECKING:
    from ..data import Dataset
    from .defended import DefendedClassifier

log = logging.getLogger(__name__)


def image_seeds(x: np.ndarray, seed: int) -> list[tuple[int, int]]:
    """(N,) one seed per image, from its pixels and `seed`: an image gets the same noise wherever
    it sits in a request, so a served version answers the same image the same way."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return [(seed, zlib.crc32(image.tobytes())) for image in x]


def vote_counts(classify: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, sigma: float, samples: int,
                seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """(N, K) int counts: per image, how often classify(images) -> (M, K) logits puts each class
    on top over `samples` copies with Gaussian noise of standard deviation sigma (on the [0, 1]
    scale) added to the image, each image's noise seeded by image_seeds."""
    x = np.asarray(x, dtype=np.float32)
    seeds = image_seeds(x, seed)
    counts = None
    per_batch = max(1, batch_size // samples)
    for start in range(0, len(x), per_batch):
        stopping.checkpoint()
        chunk = x[start:start + per_batch]
        noise = np.concatenate([np.random.default_rng(s).normal(0.0, sigma, size=(samples, *chunk.shape[1:]))
                                for s in seeds[start:start + per_batch]]).astype(np.float32)
        logits = np.asarray(classify(np.repeat(chunk, samples, axis=0) + noise))
        votes = logits.argmax(axis=1).reshape(len(chunk), samples)
        if counts is None:
            counts = np.zeros((len(x), logits.shape[1]), dtype=np.int64)
        for j in range(counts.shape[1]):
            counts[start:start + len(chunk), j] = (votes == j).sum(axis=1)
    return counts if counts is not None else np.zeros((0, 0), dtype=np.int64)


def confirmed_below_half(counts: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """(N,) bool: a class's count out of n votes puts its share below 1/2 at level alpha (the
    Clopper-Pearson upper bound under 0.5): evidence, not sampling noise, that it lost the vote."""
    counts = np.asarray(counts)
    upper = np.array([stats.beta.ppf(1 - alpha, c + 1, n - c) if c < n else 1.0 for c in counts])
    return upper < 0.5


def vote_logits(counts: np.ndarray) -> np.ndarray:
    """(N, K) log vote shares (add-half smoothed, so no class is -inf): a softmax of them gives
    the shares, which is what a smoothed classifier's probabilities are."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log((counts + 0.5) / (counts.sum(axis=1, keepdims=True) + 0.5 * counts.shape[1]))


def abstains(counts: np.ndarray, alpha: float) -> np.ndarray:
    """(N,) bool: Cohen's PREDICT abstains when a two-sided binomial test of the top two
    classes' counts cannot tell them apart at level alpha."""
    top = np.sort(np.asarray(counts), axis=1)[:, ::-1]
    return np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue > alpha if a + b else True
                     for a, b in zip(top[:, 0], top[:, 1])])


def certify(network: "keras.Model", x: np.ndarray, *, sigma: float, n0: int = 100, n: int = 1000, alpha: float = 0.001,
            seed: int = 0, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted (N,) int, -1 where it abstains; radius (N,) float, the certified L2 radius on
    the [0, 1] pixel scale, 0 where it abstains): ART's CERTIFY on the smoothed network."""
    from art.estimators.certification.randomized_smoothing import TensorFlowV2RandomizedSmoothing

    smoothed = TensorFlowV2RandomizedSmoothing(model=network, nb_classes=int(network.output_shape[-1]),
                                               input_shape=tuple(network.input_shape[1:]), clip_values=(0.0, 1.0),
                                               sample_size=n0, scale=sigma, alpha=alpha)
    state = np.random.get_state()
    np.random.seed(seed)  # ART draws its noise from numpy's global generator
    try:
        predicted, radius = smoothed.certify(np.asarray(x, dtype=np.float32), n=n, batch_size=batch_size)
    finally:
        np.random.set_state(state)
    return predicted.astype(np.int64), radius.astype(np.float64)


def train_under_noise(network: "keras.Model", x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      train_config: TrainConfig, *, sigma: float, epochs: int,
                      on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list]:
    """Fine-tune `network` in place on images with Gaussian noise of sigma added (a noise layer
    in front, active in training only), so that its vote under noise is right: Cohen's training.
    Returns the per-epoch history."""
    inputs = keras.Input(network.input_shape[1:])
    noisy = keras.layers.GaussianNoise(sigma, seed=train_config.seed, name="smoothing_noise")(inputs)
    trainer = keras.Model(inputs, network(noisy))
    return fit(trainer, x, y, x_val, y_val, replace(train_config, epochs=epochs, patience=0), on_epoch=on_epoch)


def build(classifier: "DefendedClassifier", data: "Dataset", config: DefendConfig,
          hooks: Hooks) -> "DefendedClassifier":
    """Registry builder: the network fine-tuned under noise of config.sigma for
    config.smoothing_epochs epochs, answering by a vote of config.smoothing_samples noisy copies
    (abstaining at config.smoothing_alpha)."""
    log.info("randomized smoothing: sigma %g, %d epochs of training under noise", config.sigma, config.smoothing_epochs)
    history = train_under_noise(classifier.network, data.x["train"], data.y["train"], data.x["val"], data.y["val"],
                                training_config(config), sigma=config.sigma, epochs=config.smoothing_epochs,
                                on_epoch=partial(hooks.on_epoch, "smoothing"))
    hooks.on_history("smoothing", history)
    smoothing = {"sigma": config.sigma, "samples": config.smoothing_samples, "alpha": config.smoothing_alpha,
                 "seed": config.seed}
    return replace(classifier, smoothing=smoothing)


__all__ = ["abstains", "build", "certify", "confirmed_below_half", "image_seeds", "train_under_noise", "vote_counts",
           "vote_logits"]
