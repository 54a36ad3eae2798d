"""Gradient attacks through ART: FGSM and PGD."""

import numpy as np
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

from .art_wrapper import as_art_classifier
from .budget import art_norm


def _one_hot(labels, n):
    return np.eye(n, dtype=np.float32)[labels]


def fgsm(model, x, eps, norm="inf", target=None, batch_size=128, **_):
    """One signed-gradient step of size eps (Goodfellow et al. 2015).

    target: None (untargeted: away from the model's own prediction) or a class index every
    image is pushed towards.
    """
    classifier = as_art_classifier(model)
    attack = FastGradientMethod(classifier, norm=art_norm(norm), eps=eps, targeted=target is not None,
                                batch_size=batch_size)
    y = None if target is None else _one_hot(np.full(len(x), target), classifier.nb_classes)
    return attack.generate(x=x, y=y)


def pgd(model, x, eps, norm="inf", target=None, steps=10, step_size=None, random_start=True,
        batch_size=128, seed=0, **_):
    """Projected gradient descent (Madry et al. 2018): `steps` steps of `step_size`
    (default eps / 4) with projection onto the eps-ball, from a random start if asked."""
    classifier = as_art_classifier(model)
    attack = ProjectedGradientDescent(
        classifier, norm=art_norm(norm), eps=eps, eps_step=step_size or eps / 4, max_iter=steps,
        targeted=target is not None, num_random_init=1 if random_start else 0, batch_size=batch_size,
        verbose=False,
    )
    y = None if target is None else _one_hot(np.full(len(x), target), classifier.nb_classes)
    return attack.generate(x=x, y=y)
