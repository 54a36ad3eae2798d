"""Attacks: a name picks a function (as timm's create_model does).

Every attack is a function(model, x, *, y, eps, norm, target, <its own keyword parameters>): a
Keras model (logits out, [0, 1] images in), images x (N, H, W, 3), their true labels y (N,)
(untargeted attacks raise the loss of y, as AutoAttack and RobustBench do), the budget eps
and its norm, and a target class index or None. It returns adversarial images; a universal attack
returns (x_adv, perturbation). The caller (`craft`) projects every result onto the eps-ball
and [0, 1], so each stays within its budget whatever the underlying method does.

An attack takes exactly the parameters its function declares (no catch-all), and their names
are the AttackConfig fields they come from, so a misspelt or unused setting is an error that
names it. Adding an attack = one function + one line in ATTACKS.
"""

import difflib
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import eps_range
from ..errors import ConfigError
from ..models.training import predict_logits
from .budget import NORMS, apply_budget, check_norm, perturbation_sizes, project
from .art_reference import apgd_art, autoattack_art, fgsm_art, pgd_art, square_art
from .gradient import apgd, apgd_t, autoattack, cw_pgd, fgsm, health, pgd, square
from .minimal import cw, deepfool
from .universal import uap, uap_fast

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# What every attack function takes; its `params` are the rest of its keyword parameters.
FIXED = ("model", "x", "y", "eps", "norm", "target")
# Settings of the run rather than of a method: `craft` forwards them to the functions that declare them.
COMMON = ("seed", "batch_size")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    function: Callable  # function(model, x, *, y, eps, norm, target, <its own keyword parameters>)
    norms: tuple[str, ...]  # of NORMS
    targeted: bool  # has a targeted mode
    universal: bool  # returns (x_adv, perturbation)
    summary: str  # one line: the method, its source, whose implementation

    def __post_init__(self):
        # A programming error, caught at import: the function must take the fixed arguments and
        # name every parameter (a **kwargs catch-all would swallow misspelt settings again).
        parameters = inspect.signature(self.function).parameters
        missing = [p for p in FIXED if p not in parameters]
        if missing:
            raise TypeError(f"attack {self.name}: {self.function.__name__} lacks {', '.join(missing)}")
        loose = [p.name for p in parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if loose:
            raise TypeError(f"attack {self.name}: {self.function.__name__} takes *{'/**'.join(loose)}; "
                            "name every parameter")
        unknown = [n for n in self.norms if n not in NORMS]
        if unknown or not self.norms:
            raise TypeError(f"attack {self.name}: norms must be some of {', '.join(NORMS)}, got {self.norms}")

    @property
    def params(self) -> tuple[str, ...]:
        """The keyword parameters the function accepts beyond model, x, y, eps, norm, target, in
        the order it declares them (read from its signature, so they cannot disagree)."""
        return tuple(p for p in inspect.signature(self.function).parameters if p not in FIXED)


ATTACKS = {spec.name: spec for spec in (
    AttackSpec("fgsm", fgsm, ("inf", "2"), True, False, "FGSM (Goodfellow 2015), one compiled step; ours"),
    AttackSpec("fgsm_art", fgsm_art, ("inf", "2"), True, False, "FGSM (Goodfellow 2015); ART's FastGradientMethod"),
    AttackSpec("pgd", pgd, ("inf",), True, False, "PGD-CE (Madry 2018), iterated projected steps; ours, compiled"),
    AttackSpec("pgd_art", pgd_art, ("inf", "2"), True, False, "PGD (Madry 2018); ART's ProjectedGradientDescent"),
    AttackSpec("apgd", apgd, ("inf",), True, False, "APGD-CE or APGD-DLR (Croce & Hein 2020), step-size-free PGD; "
                                                    "ours, compiled"),
    AttackSpec("apgd_art", apgd_art, ("inf", "2"), True, False, "APGD-CE (Croce & Hein 2020); ART's "
                                                                "AutoProjectedGradientDescent"),
    AttackSpec("apgd_t", apgd_t, ("inf",), False, False, "APGD-T (Croce & Hein 2020), targeted DLR towards each "
                                                         "likely class in turn; ours, compiled"),
    AttackSpec("square", square, ("inf",), False, False, "Square (Andriushchenko 2020), score-based random "
                                                         "search, one query an iteration; ours"),
    AttackSpec("square_art", square_art, ("inf",), False, False, "Square (Andriushchenko 2020); ART's SquareAttack"),
    AttackSpec("autoattack", autoattack, ("inf",), False, False, "AutoAttack standard (Croce & Hein 2020): APGD-CE, "
                                                                 "APGD-T, Square (FAB-T not run); ours"),
    AttackSpec("autoattack_art", autoattack_art, ("inf", "2"), False, False, "ART's AutoAttack ensemble: APGD-CE, "
               "APGD-DLR, DeepFool, Square"),
    AttackSpec("health", health, ("inf",), False, False, "APGD on the benign-vs-malignant log-odds: cancers' "
                                                         "malignancy scores down, benign ones up; ours, compiled"),
    AttackSpec("cw_pgd", cw_pgd, ("inf",), True, False, "PGD on the Carlini-Wagner margin loss, L-inf, batched and "
               "compiled; ours"),
    AttackSpec("cw", cw, ("inf", "2"), True, False, "Carlini-Wagner (2017), minimal perturbation; ART's"),
    AttackSpec("deepfool", deepfool, ("2",), False, False, "DeepFool (Moosavi-Dezfooli 2016), minimal L2; ART's"),
    AttackSpec("uap", uap, ("inf", "2"), False, True, "universal perturbation (Moosavi-Dezfooli 2017); ART's"),
    AttackSpec("uap_fast", uap_fast, ("inf", "2"), True, True, "universal perturbation by batched signed "
                                                                "gradients; ours"),
)}


def _refuse_params(spec, names):
    unknown = [n for n in dict.fromkeys(names) if n not in spec.params]
    if not unknown:
        return
    accepted = ", ".join(spec.params) or "none"
    noun = "parameter" if len(unknown) == 1 else "parameters"
    hints = [f"{n!r} -> {close[0]!r}" for n in unknown if (close := difflib.get_close_matches(n, spec.params, 1))]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ConfigError(f"attack {spec.name} takes no {noun} {', '.join(map(repr, unknown))}; "
                      f"it accepts {accepted}{hint}", unknown)


def check_attack(method: str, eps: float, norm: str, target: int | None = None, params: Iterable[str] = ()) -> str:
    """Validate an attack request before any work; returns the normalised norm.

    ConfigError for an unknown method, eps outside [0, 1], a norm the attack lacks, a target
    for an attack with no targeted mode, or any name in `params` the attack does not accept.
    """
    if method not in ATTACKS:
        raise ConfigError(f"unknown attack method {method!r}; expected one of {', '.join(ATTACKS)}", ["method"])
    spec = ATTACKS[method]
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(f"eps must be a number, got {eps!r}", ["eps"]) from None
    problem = eps_range(value)
    if problem:
        raise ConfigError(f"eps {problem}, got {eps}", ["eps"])
    norm = check_norm(norm)
    if norm not in spec.norms:
        raise ConfigError(f"attack {method} has no {norm} norm; it supports {', '.join(spec.norms)}", ["norm"])
    if target is not None and not spec.targeted:
        raise ConfigError(f"attack {method} has no targeted mode", ["target"])
    _refuse_params(spec, params)
    return norm


def craft(method: str, model: "keras.Model", x: np.ndarray, eps: float, norm: str = "inf", target: int | None = None,
          *, y: np.ndarray | None = None, seed: int = 0, batch_size: int = 128,
          **params: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Run attack `method` on x; returns (x_adv within budget and [0, 1], universal perturbation or None).

    y: (N,) the images' true labels, which untargeted attacks move the images away from; None
    (images with no labels) takes the model's own predictions instead, which lets an image the
    model gets wrong be pushed into its right class: give y whenever the labels are known.

    seed and batch_size are settings of the run, passed on only to the attacks that take them
    (see ATTACKS[method].params); every key of `params` must be a parameter of the attack,
    else ConfigError before any work.
    """
    norm = check_attack(method, eps, norm, target, params)
    spec = ATTACKS[method]
    common = {k: v for k, v in (("seed", seed), ("batch_size", batch_size)) if k in spec.params}
    x = np.asarray(x, dtype=np.float32)
    if y is None:
        y = predict_logits(model, x).argmax(axis=1) if len(x) else np.zeros(0, np.int64)
    y = np.asarray(y, dtype=np.int64)
    if y.shape != (len(x),):
        raise ConfigError(f"y must hold one label per image: {len(x)} images, labels of shape {y.shape}")
    if float(eps) == 0:
        # A zero budget leaves every image as it is (the first point of a security curve);
        # ART refuses a zero step size, and there is nothing to compute.
        return x.copy(), (np.zeros((1,) + x.shape[1:], np.float32) if spec.universal else None)
    log.debug("crafting %s (eps %.4f, %s, target %s) on %d images with %s", method, eps, norm, target, len(x),
              common | params)
    out = spec.function(model, x, y=y, eps=eps, norm=norm, target=target, **common, **params)
    x_adv, perturbation = out if spec.universal else (out, None)
    if perturbation is not None:
        perturbation = project(perturbation, eps, norm)
        x_adv = np.clip(x + perturbation, 0.0, 1.0).astype(np.float32)
    return apply_budget(x, x_adv, eps, norm), perturbation


__all__ = ["ATTACKS", "NORMS", "AttackSpec", "apply_budget", "check_attack", "craft",
           "perturbation_sizes", "project"]
