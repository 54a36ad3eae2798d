"""ART's own implementations of the gradient attacks and of AutoAttack, kept as the independent
check of ours (attacks/gradient.py, attacks/compiled.py, attacks/random_search.py): tests and
benchmarks run both on the same images. ART calls its model eagerly at every step, so each is
handed the model's forward pass compiled once (art_wrapper.CompiledForward)."""

from typing import TYPE_CHECKING

import numpy as np
from art.attacks.evasion import (AutoAttack, AutoProjectedGradientDescent, FastGradientMethod,
                                 ProjectedGradientDescent, SquareAttack)
from art.attacks.evasion.auto_attack import run_attack

from ..errors import ConfigError
from .art_wrapper import CompiledForward, as_art_classifier, seeded_globals
from .budget import art_norm

if TYPE_CHECKING:
    import keras


def _one_hot(labels, n):
    return np.eye(n, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def _art_y(classifier, y, target):
    """ART's y: the true labels one-hot (untargeted), or the target class for every image."""
    labels = np.full(len(y), target) if target is not None else y
    return _one_hot(labels, classifier.nb_classes)


def fgsm_art(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
             target: int | None = None, batch_size: int = 128) -> np.ndarray:
    """One signed-gradient step of size eps (Goodfellow et al. 2015), through ART, away from
    the true labels y or towards class index `target`."""
    classifier = as_art_classifier(model)
    attack = FastGradientMethod(classifier, norm=art_norm(norm), eps=eps, targeted=target is not None,
                                batch_size=batch_size)
    return attack.generate(x=x, y=_art_y(classifier, y, target))


def pgd_art(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
            target: int | None = None, steps: int = 10, step_size: float | None = None, random_start: bool = True,
            batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """ART's ProjectedGradientDescent (Madry et al. 2018): `steps` steps of `step_size`
    (default eps / 4), random start drawn with `seed`; true labels y or a target class."""
    classifier = as_art_classifier(model)
    attack = ProjectedGradientDescent(
        classifier, norm=art_norm(norm), eps=eps, eps_step=step_size or eps / 4, max_iter=steps,
        targeted=target is not None, num_random_init=1 if random_start else 0, batch_size=batch_size,
        verbose=False,
    )
    # ART takes no seed: its random start (art.utils.random_sphere) draws from numpy's global
    # generator, so np.random.seed(seed) right before generate makes it reproducible.
    with seeded_globals(seed):
        return attack.generate(x=x, y=_art_y(classifier, y, target))


def apgd_art(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
             target: int | None = None, steps: int = 100, restarts: int = 1, step_size: float | None = None,
             batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """ART's AutoProjectedGradientDescent on the cross-entropy (APGD-CE), true labels y or a
    target class; kept to check `apgd` against (tests/steps/test_counting.py, benchmarks)."""
    classifier = as_art_classifier(CompiledForward(model))
    attack = AutoProjectedGradientDescent(
        classifier, norm=art_norm(norm), eps=eps, eps_step=step_size or 2 * eps, max_iter=steps,
        targeted=target is not None, nb_random_init=restarts, batch_size=batch_size, loss_type="cross_entropy",
        verbose=False,
    )
    with seeded_globals(seed):
        return attack.generate(x=x, y=_art_y(classifier, y, target)).astype(np.float32)


def square_art(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
               target: int | None = None, queries: int = 5000, restarts: int = 1, batch_size: int = 128,
               seed: int = 0) -> np.ndarray:
    """ART's SquareAttack (p = 0.8), `queries` iterations per restart, on the margin of the true
    label y: three queries an iteration and one square for the whole batch (attacks/random_search.py
    says why ours replaced it); kept as an independent check of `square`."""
    if norm != "inf":
        raise ConfigError(f"attack square_art has no {norm} norm; it supports inf")
    if target is not None:
        raise ConfigError("attack square_art has no targeted mode here")
    classifier = as_art_classifier(CompiledForward(model))
    attack = SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=queries, nb_restarts=restarts, p_init=0.8,
                          batch_size=batch_size, verbose=False)
    with seeded_globals(seed):
        return attack.generate(x=x, y=_one_hot(y, classifier.nb_classes)).astype(np.float32)


def autoattack_art(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "inf",
                   target: int | None = None, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """ART's AutoAttack ensemble (ART 1.20's default members: APGD-CE and APGD-DLR, 100
    iterations and 5 random starts each, initial step 2 eps; DeepFool; Square, 5000 queries,
    5 restarts), on the true labels y, one member after the other on the images still
    classified right, each image keeping the first success within the eps-ball. ART's
    AutoAttack.generate imports the optional package `multiprocess` even when run serially,
    so the serial loop is ours, calling ART's own per-member step (auto_attack.run_attack).
    Untargeted only. Expensive: up to 1000 APGD steps per image that resists, then 25 000
    Square queries. Kept as an independent check of `autoattack`."""
    if target is not None:
        raise ConfigError("attack autoattack_art has no targeted mode")
    classifier = as_art_classifier(CompiledForward(model))
    ensemble = AutoAttack(classifier, norm=art_norm(norm), eps=eps, eps_step=2 * eps, batch_size=batch_size,
                          targeted=False).attacks
    x_adv = np.array(x, dtype=np.float32)
    labels = np.asarray(y)
    robust = classifier.predict(x_adv, batch_size=batch_size).argmax(axis=1) == labels
    y_hot = _one_hot(labels, classifier.nb_classes)
    with seeded_globals(seed):
        for member in ensemble:
            if not robust.any():
                break
            member.set_params(verbose=False)  # ART builds them with progress bars on
            x_adv, robust = run_attack(x_adv, y_hot, robust, member, classifier, norm=art_norm(norm), eps=eps)
    return x_adv.astype(np.float32)
