"""Certified robustness: randomized smoothing's certificate (defenses/smoothing.py) per image,
counted per L2 radius, and checked by an attack.

    records, seconds = measure_certified(classifier, x, y, sigma=0.25, n=1000, alpha=0.001, model="target")

A certificate says the smoothed classifier's answer for x cannot change within L2 radius R of
x (pixels on the [0, 1] scale). Per radius r: certified_accuracy, the share of images whose
certified class is right with R >= r; certified_fnr, the share of cancers not certified as a
malignant class at r (called benign, abstained, or certified only below r: a clinician cannot
lean on any of them); abstain_rate. Beside each, the same smoothed classifier under an L2 PGD
attack of budget r (ART's, fresh noise every step as Salman et al. 2019 attack smoothing):
empirical_accuracy, the share whose vote (n0 samples) under attack still wins for the true
class (at least the certified share, up to the vote's sampling); `disagreements`, the images
certified at r or more whose n0-sample vote under attack left their certified class; and
`violations`, those of them where a fresh vote of n samples confirms it (the class's share below
1/2 at level alpha): 0 where the certificate holds.

The base is the whole model without its detector (the certificate is about the classifier),
input transformations included: Cohen's theorem holds for any base classifier.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .. import attacks
from ..data import malignant_mask
from ..defenses.smoothing import certify, confirmed_below_half
from .intervals import bootstrap_indices, percentile_interval
from .records import CERTIFIED, Record, record

if TYPE_CHECKING:
    from ..defenses.defended import DefendedClassifier

SMOOTHING = "smoothing"  # its attack column
RADII = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def certified_counts(y: np.ndarray, predicted: np.ndarray, radius: np.ndarray, malignant: np.ndarray,
                     radii: Sequence[float] = RADII) -> dict[float, dict[str, np.ndarray | None]]:
    """{radius: {"certified_accuracy": (N,) bool, "certified_miss": (N,) bool over cancers or
    None}} per image: certified right at that radius; a cancer not certified malignant there."""
    y, predicted, radius = np.asarray(y), np.asarray(predicted), np.asarray(radius)
    cancer = malignant[y]
    certified_malignant = (predicted >= 0) & malignant[np.maximum(predicted, 0)]
    out = {}
    for r in radii:
        holds = (predicted >= 0) & (radius >= r)
        out[r] = {"certified_accuracy": holds & (predicted == y),
                  "certified_miss": ~(holds & certified_malignant)[cancer] if cancer.any() else None}
    return out


def _with_interval(name, per_image, idx):
    if per_image is None or not len(per_image):
        return {}
    per_image = per_image.astype(np.float64)
    low, high = percentile_interval(per_image[idx].mean(axis=1)) if idx is not None else (np.nan, np.nan)
    return {name: float(per_image.mean()), f"{name}_ci_low": low, f"{name}_ci_high": high}


def measure_certified(classifier: "DefendedClassifier", x: np.ndarray, y: np.ndarray, *, sigma: float, n: int = 1000,
                      n0: int = 100, alpha: float = 0.001, model: str, health_map: str = "clinical", seed: int = 0,
                      n_resamples: int = 1000, radii: Sequence[float] = RADII,
                      attack_steps: int = 10) -> tuple[list[Record], float]:
    """(records, seconds per certified image) of `classifier` (a DefendedClassifier) certified
    on x (N, H, W, 3) with labels y (N,): Cohen's CERTIFY with n0 selection and n estimation
    samples at level alpha under noise sigma, then per radius the figures above with 95 %
    bootstrap intervals, and the L2 PGD check. Records: record(model, SMOOTHING, CERTIFIED,
    radius, figure, value)."""
    malignant = malignant_mask(health_map)
    base = replace(classifier, detector=None, smoothing=None).as_keras()
    started = time.perf_counter()
    predicted, radius = certify(base, x, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed)
    seconds = (time.perf_counter() - started) / max(len(x), 1)
    smoothed = replace(classifier, detector=None, smoothing={"sigma": sigma, "samples": n0, "alpha": alpha, "seed": seed})
    attacked = smoothed.as_keras()  # built once: a new Keras model per radius would trace the attack again
    y = np.asarray(y)
    cancer = malignant[y]
    idx = bootstrap_indices(len(y), n_resamples=n_resamples, seed=seed)
    cancer_idx = bootstrap_indices(int(cancer.sum()), n_resamples=n_resamples, seed=seed) if cancer.any() else None
    abstained = predicted < 0
    records = []
    for r, counted in certified_counts(y, predicted, radius, malignant, radii).items():
        values = _with_interval("certified_accuracy", counted["certified_accuracy"], idx)
        values |= _with_interval("certified_fnr", counted["certified_miss"], cancer_idx)
        values["abstain_rate"] = float(abstained.mean())
        if r > 0:
            x_adv, _ = attacks.craft("pgd_art", attacked, x, r, "2", y=y, seed=seed, steps=attack_steps,
                                     random_start=True)
            answer = smoothed.votes(x_adv).argmax(axis=1)  # the vote's winner, g(x_adv) as n0 samples see it
            values["empirical_accuracy"] = float(np.mean(answer == y))
            held = (predicted >= 0) & (radius >= r)
            moved = np.flatnonzero(held & (answer != predicted))
            values["disagreements"] = float(len(moved))
            values["violations"] = float(violations(smoothed, x_adv[moved], predicted[moved], n=n, alpha=alpha))
        records += [record(model, SMOOTHING, CERTIFIED, r, k, v) for k, v in values.items()]
    settings = {"certify_sigma": sigma, "certify_n": n, "certify_n0": n0, "certify_alpha": alpha,
                "certify_seconds_per_image": seconds, "certify_images": len(y)}
    records += [record(model, SMOOTHING, CERTIFIED, 0.0, k, v) for k, v in settings.items()]
    return records, seconds


def violations(smoothed: "DefendedClassifier", x_adv: np.ndarray, certified_class: np.ndarray, *, n: int,
               alpha: float) -> int:
    """How many of x_adv (attacked images whose n0-sample vote left their certified class) a
    fresh vote of n samples confirms lost it: the certified class's share below 1/2 at level
    alpha (smoothing.confirmed_below_half). A disagreement of the small vote alone is sampling."""
    if not len(x_adv):
        return 0
    confirm = replace(smoothed, smoothing=dict(smoothed.smoothing, samples=n, seed=smoothed.smoothing["seed"] + 1))
    counts = confirm.votes(x_adv)[np.arange(len(x_adv)), certified_class]
    return int(confirmed_below_half(counts, n, alpha).sum())


def certified_curve(records: Iterable[Record], *, model: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(radii, values) float64 of `metric` over `model`'s certified rows, radius ascending."""
    points = sorted((r["eps"], r["value"]) for r in records
                    if r["model"] == model and r["threat"] == CERTIFIED and r["metric"] == metric)
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


__all__ = ["CERTIFIED", "RADII", "SMOOTHING", "certified_counts", "certified_curve", "measure_certified"]
