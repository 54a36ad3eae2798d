"""Minimal-perturbation attacks through ART: Carlini-Wagner and DeepFool.

They search for the smallest perturbation that flips the prediction; the step clips the result
to the eps budget afterwards, so a perturbation that needed more than eps is cut back. ART is handed
the network's compiled forward pass (art_wrapper.CompiledForward): it calls the model at every step.
"""

from typing import TYPE_CHECKING

import numpy as np
from art.attacks.evasion import CarliniL2Method, CarliniLInfMethod, DeepFool

from ..errors import ConfigError
from .art_wrapper import CompiledForward, as_art_classifier
from .budget import check_norm

if TYPE_CHECKING:
    import keras


def cw(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "2", target: int | None = None,
       steps: int = 10, search_steps: int = 3, batch_size: int = 64) -> np.ndarray:
    """Carlini-Wagner (2017), L2 or L-inf: `steps` optimisation iterations (and, for L2,
    `search_steps` binary-search steps over the trade-off constant), away from the true labels y
    or towards `target`."""
    classifier = as_art_classifier(CompiledForward(model))
    targeted = target is not None
    if check_norm(norm) == "2":
        attack = CarliniL2Method(classifier, targeted=targeted, max_iter=steps, binary_search_steps=search_steps,
                                 batch_size=batch_size, verbose=False)
    else:
        attack = CarliniLInfMethod(classifier, targeted=targeted, max_iter=steps, batch_size=batch_size, verbose=False)
    labels = np.full(len(x), target) if targeted else np.asarray(y)
    return attack.generate(x=x, y=np.eye(classifier.nb_classes, dtype=np.float32)[labels])


def deepfool(model: "keras.Model", x: np.ndarray, *, y: np.ndarray, eps: float, norm: str = "2",
             target: int | None = None, steps: int = 50, batch_size: int = 64) -> np.ndarray:
    """DeepFool (Moosavi-Dezfooli et al. 2016), untargeted, L2 linearisation: `norm` must be
    '2' and `target` None (it takes both so that every attack is called alike). It crosses the
    nearest decision boundary of the model's own prediction whatever y says (ART's DeepFool
    takes no labels); `measure` counts an image the model already got wrong as wrong."""
    if check_norm(norm) != "2":
        raise ConfigError(f"attack deepfool has no {check_norm(norm)} norm; it supports 2")
    if target is not None:
        raise ConfigError("attack deepfool has no targeted mode")
    attack = DeepFool(as_art_classifier(CompiledForward(model)), max_iter=steps, batch_size=batch_size, verbose=False)
    return attack.generate(x=x)
