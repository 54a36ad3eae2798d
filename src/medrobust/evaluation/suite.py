"""A model measured clean and under a list of attacked conditions.

`measure(target, x, y, conditions, surrogate=...)` predicts the clean images, crafts each
condition's adversarial images on the true labels y (on the surrogate for "transfer", on the
target itself for "whitebox": its `as_keras()` view, gradients through input transformations
by BPDA) and scores every set of predictions, rejections included. Figures are counted as
AutoAttack and RobustBench count them (evaluation/worst.py): per image, the most harmful of the
clean image and the attack's images at this budget and every smaller one; and each model gets
an ensemble row per budget ("ensemble", white-box: an attacker who can run the suite's attacks
on the model itself can also run them on a surrogate), the per-image worst case over every
attack of the suite up to that budget. It returns an Evaluation: the long-format records, and
per condition the per-image predictions, the detector's verdicts, the counted predictions and
scores, the confusion matrices and a few adversarial examples. Nothing here logs to MLflow.
"""

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from .. import attacks
from ..data import malignant_mask
from ..defenses.defended import DefendedClassifier
from ..errors import ConfigError
from .operating_point import malignancy_score
from .records import (CLEAN, ENSEMBLE, THREAT_TITLES, Record, column_title, condition_name, flat_metrics, record,
                      wide_table)
from .scoring import score, with_rejection
from .worst import worst_predictions, worst_scores

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

ATTACKED = ("transfer", "whitebox")


@dataclass(frozen=True)
class Condition:
    """An attacked condition: `attack` at budget `eps` (`norm`), crafted on the surrogate
    (threat 'transfer') or on the measured model itself ('whitebox'). params: the method's own
    parameters (uap_fast: {'max_steps': 60}); the seed is measure's."""

    attack: str
    eps: float
    threat: str = "whitebox"
    norm: str = "inf"
    params: dict = field(default_factory=dict)

    def check(self) -> None:
        """ConfigError for a threat other than transfer or whitebox, or an attack request
        attacks.check_attack refuses (unknown method, eps, norm, a parameter it does not take)."""
        if self.threat not in ATTACKED:
            raise ConfigError(f"threat must be one of {', '.join(ATTACKED)}, got {self.threat!r}")
        attacks.check_attack(self.attack, self.eps, self.norm, params=tuple(self.params))


def suite(methods: Sequence[str], eps: float, threats: Sequence[str] = ATTACKED, norm: str = "inf",
          params: Mapping[str, Mapping[str, object]] | None = None) -> tuple[Condition, ...]:
    """Conditions for each of `methods` under each of `threats`, method by method:
    suite(('fgsm', 'uap_fast'), 2/255) -> fgsm transfer, fgsm whitebox, uap_fast transfer, ...
    params: {method: {parameter: value}} for the methods listed there."""
    params = params or {}
    return tuple(Condition(m, float(eps), t, norm, dict(params.get(m, {}))) for m in methods for t in threats)


@dataclass
class Measurement:
    """One model in one condition."""

    model: str
    attack: str  # CLEAN ("none") for clean images; ENSEMBLE ("ensemble") for the suite's worst case
    threat: str  # clean | transfer | whitebox
    eps: float  # 0.0 for clean images
    predictions: np.ndarray  # (N,) the model's argmax on this condition's images (the clean one's for ensemble)
    rejected: np.ndarray | None  # (N,) bool detector verdicts; None without a detector
    counted: np.ndarray  # (N,) what the figures count: per image the most harmful of clean and attacked, strict
    confusion: np.ndarray  # (K, K) of `counted`, rows true
    health_confusion: np.ndarray  # (2, 2) benign / malignant of `counted`
    values: dict  # {metric: value}, no condition prefix
    examples: np.ndarray | None = None  # the first few adversarial images; None for clean ones
    probabilities: np.ndarray | None = None  # (N, K) softmax of the logits on this condition's images
    scores: np.ndarray | None = None  # (N,) the malignancy score the operating point counts: the most harmful
    strict: np.ndarray | None = None  # (N,) this condition's own predictions, rejections counted strictly

    def records(self) -> list[Record]:
        return [record(self.model, self.attack, self.threat, self.eps, metric, value)
                for metric, value in self.values.items()]


@dataclass
class Evaluation:
    y_true: np.ndarray  # (N,)
    health_map: str
    primary: str  # the measured model's name; the others are surrogates
    measurements: list

    @property
    def records(self) -> list[Record]:
        """Long-format records (see evaluation.records), one per (model, condition, metric)."""
        return [r for m in self.measurements for r in m.records()]

    def get(self, model: str, attack: str = CLEAN, threat: str = "clean") -> Measurement:
        """The Measurement of `model` in (attack, threat); KeyError if it was not measured."""
        for m in self.measurements:
            if (m.model, m.attack, m.threat) == (model, attack, threat):
                return m
        raise KeyError(f"no measurement of {model} under {attack} ({threat})")

    def name(self, m: Measurement) -> str:
        """The metric prefix of a measurement (evaluation.records.condition_name)."""
        return condition_name(m.model, m.attack, m.threat, self.primary)

    def title(self, m: Measurement) -> str:
        return column_title(m.model, m.attack, m.threat, self.primary)

    def metrics(self) -> dict[str, float]:
        return flat_metrics(self.records, self.primary)

    def table(self) -> dict[str, dict[str, float]]:
        return wide_table(self.records, self.primary)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, K) probabilities of (N, K) logits (scipy's, in float64)."""
    return special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def _as_classifier(model):
    return model if isinstance(model, DefendedClassifier) else DefendedClassifier(model)


def add_measurement(out: list[Measurement], y: np.ndarray, name: str, classifier: DefendedClassifier, attack: str,
                    threat: str, eps: float, images: np.ndarray, *, health_map: str = "clinical",
                    started: float | None = None, n_examples: int = 6) -> Measurement:
    """Measure `classifier` (a DefendedClassifier) on `images` and append the Measurement to
    `out`, the list of measurements made so far on the same images x with true labels y (N,).
    An attacked row counts, per image, the most harmful of the same model's clean row (which
    `out` must hold) and this attack's rows in `out` at this budget or below, and these
    images. started: a perf_counter value; the row's `seconds` runs from it."""
    malignant = malignant_mask(health_map)
    logits = classifier.logits(images)
    predictions = logits.argmax(axis=1)
    rejected = classifier.rejected(images) if classifier.can_reject else None
    strict = predictions if rejected is None else with_rejection(y, predictions, rejected, health_map)[0]
    probabilities = softmax(logits)
    clean = None if threat == "clean" else next(m for m in out if m.model == name and m.threat == "clean")
    earlier = [m for m in out if (m.model, m.attack, m.threat) == (name, attack, threat) and m.eps <= eps]
    candidates = ([] if clean is None else [clean]) + earlier
    counted = worst_predictions(y, [m.strict for m in candidates] + [strict], malignant)
    scores = worst_scores(malignant[y], [m.scores for m in candidates] + [malignancy_score(probabilities, malignant)])
    s = score(y, counted, None, None if clean is None else clean.predictions, health_map, raw=predictions)
    values = dict(s.values)
    if rejected is not None:  # referred figures and the rejected rate of this condition's own images
        values |= {k: v for k, v in score(y, predictions, rejected, None, health_map).values.items()
                   if k.startswith("referred_") or k == "rejected_rate"}
    if started is not None:  # crafting (on whichever model) and predicting
        values["seconds"] = time.perf_counter() - started
    examples = None if threat == "clean" else images[:n_examples].copy()
    out.append(Measurement(name, attack, threat, float(eps), predictions, rejected, counted, s.confusion,
                           s.health_confusion, values, examples, probabilities, scores, strict))
    return out[-1]


def measure(target: "DefendedClassifier | keras.Model", x: np.ndarray, y: np.ndarray,
            conditions: Iterable[Condition] = (), *, surrogate: "DefendedClassifier | keras.Model | None" = None,
            health_map: str = "clinical", seed: int = 0, names: tuple[str, str] = ("defended", "parent"),
            n_examples: int = 6, ensemble: bool = True) -> Evaluation:
    """Measure `target` clean and under each condition; returns an Evaluation.

    target: a DefendedClassifier (network, input transformations, detector) or a Keras model.
    x: (N, H, W, 3) float32 images in [0, 1]; y: (N,) true class indices, the labels every
        untargeted attack moves the images away from.
    conditions: Condition tuples (see `suite`), measured in order.
    surrogate: the model "transfer" conditions are crafted on (the undefended parent), or None.
        It is measured too, clean and under each transfer attack's images, which are a
        white-box attack on it; each attack's images are crafted once and serve both.
    seed: passed to the attacks that take one. names: (target's name, surrogate's name).
    Every attacked row counts, per image, the most harmful of the clean image and the attack's
    images at this budget and any smaller one (evaluation/worst.py); with `ensemble`, each
    model then gets one ENSEMBLE row per budget (`ensembles`; a caller adding rows of its own
    asks for none and calls `ensembles` after). The target's rows also hold `seconds`: wall time of
    crafting and measuring the condition. With a detector, the figures count rejections
    strictly and add referred_* and rejected_rate; attacked conditions add the fooling rate
    (raw predictions against the same model's clean ones).

    Measurement order (which fixes the order of the attacks' random draws): the surrogate
    clean, the target clean, then per condition: transfer -> craft on the surrogate, the
    surrogate (first time for those images), the target; whitebox -> craft on the target.
    """
    conditions = tuple(conditions)
    for c in conditions:
        c.check()
    if surrogate is None and any(c.threat == "transfer" for c in conditions):
        raise ConfigError("a transfer condition needs a surrogate model to craft its images on")
    target = _as_classifier(target)
    surrogate = None if surrogate is None else _as_classifier(surrogate)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    target_name, surrogate_name = names
    out = []

    def add(name: str, classifier: DefendedClassifier, attack: str, threat: str, eps: float, images: np.ndarray,
            started: float | None = None) -> None:
        add_measurement(out, y, name, classifier, attack, threat, eps, images, health_map=health_map,
                        started=started, n_examples=n_examples)

    if surrogate is not None:
        add(surrogate_name, surrogate, CLEAN, "clean", 0.0, x)
    add(target_name, target, CLEAN, "clean", 0.0, x, started=time.perf_counter())
    attacked = target.as_keras() if any(c.threat == "whitebox" for c in conditions) else None
    surrogate_done = set()
    for c in sorted(conditions, key=lambda c: c.eps):  # smaller budgets first: each row counts those below it
        started = time.perf_counter()
        if c.threat == "transfer":
            log.info("%s: crafting on the %s model (transfer), %d images", c.attack, surrogate_name, len(x))
            x_adv, _ = attacks.craft(c.attack, surrogate.as_keras(), x, c.eps, c.norm, y=y, seed=seed, **c.params)
            key = (c.attack, c.eps, c.norm, tuple(sorted(c.params.items())))
            if key not in surrogate_done:
                surrogate_done.add(key)
                add(surrogate_name, surrogate, c.attack, "whitebox", c.eps, x_adv)
        else:
            log.info("%s: crafting on the %s model (white-box%s), %d images", c.attack, target_name,
                     ", BPDA through its input transformations" if target.chain else "", len(x))
            x_adv, _ = attacks.craft(c.attack, attacked, x, c.eps, c.norm, y=y, seed=seed, **c.params)
        add(target_name, target, c.attack, c.threat, c.eps, x_adv, started)
        log.debug("%s %s: accuracy %.3f", c.attack, THREAT_TITLES[c.threat], out[-1].values["accuracy"])
    evaluation = Evaluation(y, health_map, target_name, out)
    if ensemble:
        evaluation.measurements += ensembles(evaluation)
    return evaluation


def ensembles(evaluation: Evaluation) -> list[Measurement]:
    """The ENSEMBLE Measurements of an Evaluation: per model and per budget of its attacked
    rows, per image the most harmful outcome over the clean image and every attacked row of
    that model at that budget or below. Threat 'whitebox'. Returns a list, models in first-seen
    order, budgets ascending; [] for a model measured clean only."""
    y = evaluation.y_true
    malignant = malignant_mask(evaluation.health_map)
    out = []
    models = list(dict.fromkeys(m.model for m in evaluation.measurements))
    for name in models:
        rows = [m for m in evaluation.measurements if m.model == name and m.attack != ENSEMBLE]
        clean = next(m for m in rows if m.threat == "clean")
        attacked = [m for m in rows if m.threat != "clean"]
        for eps in sorted({m.eps for m in attacked}):
            members = [m for m in attacked if m.eps <= eps]
            strict = [clean.strict] + [m.strict for m in members]
            scores = [clean.scores] + [m.scores for m in members]
            counted = worst_predictions(y, strict, malignant)
            s = score(y, counted, None, None, evaluation.health_map)
            values = dict(s.values) | {"attacks": float(len(members))}
            out.append(Measurement(name, ENSEMBLE, "whitebox", float(eps), clean.predictions, None, counted,
                                   s.confusion, s.health_confusion, values, None, None,
                                   worst_scores(malignant[y], scores), counted))
    return out


__all__ = ["ATTACKED", "Condition", "add_measurement", "Evaluation", "Measurement", "ensembles", "measure", "suite"]


def per_image_csv(ids: np.ndarray, y: np.ndarray, evaluation: Evaluation, model: str) -> str:
    """CSV text: per image its id, true label, and the measured model's counted prediction on
    the clean row and each ensemble row of `model` (columns `attack@threat@eps`): what a paired comparison
    with another model's run on the same images needs (steps/report.py)."""
    kept = [m for m in evaluation.measurements if m.model == model and (m.threat == "clean" or m.attack == ENSEMBLE)]
    frame = pd.DataFrame({"image_id": ids, "label": y})
    for m in kept:
        frame[f"{m.attack}@{m.threat}@{float(m.eps)!r}"] = m.counted  # repr: eps read back exactly
    return frame.to_csv(index=False)
