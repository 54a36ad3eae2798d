"""Attacks: a name picks a function (as timm's create_model does).

Every attack takes a Keras model (logits out, [0, 1] images in), images x (N, H, W, 3) and
eps, and returns adversarial images; universal attacks return (x_adv, perturbation). The
caller (`craft`) projects every result onto the eps-ball and [0, 1], so each stays within its
budget whatever the underlying method does.
"""

import numpy as np

from .budget import NORMS, apply_budget, check_norm, perturbation_sizes, project
from .gradient import fgsm, fgsm_art, pgd
from .minimal import cw, deepfool
from .universal import uap, uap_fast

# name -> (function, norms it supports, whether it can be targeted, whether it is universal)
ATTACKS = {
    "fgsm": (fgsm, ("inf", "2"), True, False),
    "fgsm_art": (fgsm_art, ("inf", "2"), True, False),
    "pgd": (pgd, ("inf", "2"), True, False),
    "cw": (cw, ("inf", "2"), True, False),
    "deepfool": (deepfool, ("2",), False, False),
    "uap": (uap, ("inf", "2"), False, True),
    "uap_fast": (uap_fast, ("inf", "2"), True, True),
}


def check_attack(method, eps, norm, target=None):
    """Validate an attack request before any work; returns the normalised norm."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack method {method!r}; expected one of {', '.join(ATTACKS)}")
    if not 0 <= float(eps) <= 1:
        raise ValueError(f"eps must be in [0, 1] (images are on [0, 1]; 2/255 = 0.0078), got {eps}")
    norm = check_norm(norm)
    _, norms, targetable, _ = ATTACKS[method]
    if norm not in norms:
        raise ValueError(f"attack {method} has no {norm} norm; it supports {', '.join(norms)}")
    if target is not None and not targetable:
        raise ValueError(f"attack {method} has no targeted mode")
    return norm


def craft(method, model, x, eps, norm="inf", target=None, **params):
    """Run attack `method` on x; returns (x_adv within budget, universal perturbation or None)."""
    norm = check_attack(method, eps, norm, target)
    fn, _, _, universal = ATTACKS[method]
    x = np.asarray(x, dtype=np.float32)
    out = fn(model, x, eps=eps, norm=norm, target=target, **params)
    x_adv, perturbation = out if universal else (out, None)
    if perturbation is not None:
        perturbation = project(perturbation, eps, norm)
        x_adv = np.clip(x + perturbation, 0.0, 1.0).astype(np.float32)
    return apply_budget(x, x_adv, eps, norm), perturbation


__all__ = ["ATTACKS", "NORMS", "check_attack", "craft", "perturbation_sizes", "project"]
