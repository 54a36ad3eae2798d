"""Defenses: a registry of DefenseSpec entries; a spec such as `retrain+llt` combines them.

The three families of the thesis' related work:
- modify the model: `distill` (defensive distillation), `smoothing` (randomized smoothing:
  certifiable, evaluate's `certified` suite);
- modify the data: `retrain` (adversarial retraining; on-the-fly as an option) and the input
  transformations `llt` (WebP + flip, the thesis' LLT), `jpeg`, `smooth`, `squeeze`;
- add a model: `detector` (rejects inputs it calls adversarial).

Whatever order a spec is written in, the parts apply in DEFENSES' order: first what changes
the network (distill, then retrain hardens the student), then the detector (trained against that
final network; it sees the raw input), then the input transformations at prediction time, in
the order squeeze, smooth, jpeg, llt (transforms.apply_chain). The defend step builds a
combination as a fold: `for name in names: classifier = DEFENSES[name].build(classifier, data,
config, hooks)`, starting from the parent network (spec.py says what a builder is).

Adding a defense = a builder in its family's module + one DefenseSpec line below.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from ..config import DefendConfig
from ..errors import ConfigError
from . import detector, distill, retrain, smoothing, transforms
from .defended import DefendedClassifier, load_defended
from .spec import FAMILIES, DefenseSpec, Hooks, training_config
from .transforms import TRANSFORMS, apply_chain

TRAINING = ("learning_rate", "batch_size")

# In the order the parts of a combination are applied.
DEFENSES = {spec.name: spec for spec in (
    DefenseSpec("distill", "model", distill.build, ("temperature", "distill_epochs") + TRAINING,
                "defensive distillation (Papernot 2016): a student trained at temperature T, deployed at 1; ours"),
    DefenseSpec("retrain", "data", retrain.build,
                ("rounds", "ratio", "epochs_per_round", "retrain_attacks", "retrain_eps", "retrain_on", "on_the_fly",
                 "retrained_uri")
                + TRAINING + ("uap_max_steps",),
                "adversarial retraining: the thesis' rounds of fresh adversarial images, or Madry's on the fly; ours"),
    DefenseSpec("smoothing", "model", smoothing.build,
                ("sigma", "smoothing_epochs", "smoothing_samples", "smoothing_alpha") + TRAINING,
                "randomized smoothing (Cohen 2019): trained under Gaussian noise, answers by a vote of noisy copies "
                "and abstains when it is close; certified by ART"),
    DefenseSpec("detector", "add-model", detector.build,
                ("detector_attacks", "detector_eps", "detector_epochs", "detector_threshold") + TRAINING
                + ("uap_max_steps",),
                "a binary CNN that rejects the inputs it calls adversarial; ours"),
    DefenseSpec("squeeze", "input", transforms.builder("squeeze", bits="squeeze_bits"), ("squeeze_bits",),
                "feature squeezing: colour depth reduced (Xu 2018); ART's"),
    DefenseSpec("smooth", "input", transforms.builder("smooth", window="smooth_window"), ("smooth_window",),
                "median filter (Xu 2018); ART's"),
    DefenseSpec("jpeg", "input", transforms.builder("jpeg", quality="jpeg_quality"), ("jpeg_quality",),
                "JPEG compression (Dziugaite 2016); ART's"),
    DefenseSpec("llt", "input", transforms.builder("llt", quality="llt_quality"), ("llt_quality",),
                "the thesis' low-level transformation: WebP compression, then a horizontal flip; ours"),
)}


def parse_spec(spec: str) -> tuple[str, ...]:
    """`retrain+llt` -> ('retrain', 'llt') in application order; 'none' -> ().

    Raises ConfigError for an empty part, an unknown defense or one named twice.
    """
    text = str(spec).strip().lower()
    if text in ("none", ""):
        return ()
    parts = [p.strip() for p in text.split("+")]
    for part in parts:
        if part not in DEFENSES:
            raise ConfigError(f"unknown defense {part!r} in {spec!r}; expected names from {', '.join(DEFENSES)} "
                              "joined by '+' (e.g. retrain+llt)")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"defense spec {spec!r} names a defense twice")
    return tuple(name for name in DEFENSES if name in parts)


def readers() -> dict[str, tuple[str, ...]]:
    """{DefendConfig field: (the defenses that read it, in DEFENSES' order)} over every spec."""
    out = {}
    for spec in DEFENSES.values():
        for setting in spec.settings:
            out.setdefault(setting, []).append(spec.name)
    return {setting: tuple(names) for setting, names in out.items()}


def check_settings(names: Sequence[str], config: DefendConfig, also_read: Iterable[str] = ()) -> None:
    """Refuse a setting given for nothing: ConfigError when a DefendConfig field that some
    defenses read differs from its default while none of `names` reads it (the caller names
    in `also_read` the fields it reads itself, e.g. uap_max_steps for its own uap_fast).
    E.g. defense=llt with temperature=5: 'temperature is a setting of distill, which the
    defense 'llt' does not include'."""
    read = set(also_read).union(*(DEFENSES[name].settings for name in names))
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(config) if f.default is not MISSING or f.default_factory is not MISSING}
    spec = "+".join(names) or "none"
    for setting, owners in readers().items():
        if setting in read or setting not in defaults or getattr(config, setting) == defaults[setting]:
            continue
        if len(owners) == 1:
            who = f"a setting of {owners[0]}, which the defense '{spec}' does not include"
        else:
            who = f"a setting of {', '.join(owners[:-1])} and {owners[-1]}, none of which the defense '{spec}' includes"
        raise ConfigError(f"{setting} is {who}; it was given as {getattr(config, setting)!r} "
                          f"(default {defaults[setting]!r})", [setting])


def applicable(names: Sequence[str], values: Mapping[str, Any], also_read: Iterable[str] = ()) -> dict[str, Any]:
    """`values` ({DefendConfig field: value}) without the defense settings that none of `names`
    (nor `also_read`, as in check_settings) reads: what a caller that holds settings for every
    defense (the baseline job) hands to a DefendConfig so that check_settings accepts it."""
    read = set(also_read).union(*(DEFENSES[name].settings for name in names))
    owned = readers()
    return {k: v for k, v in values.items() if k not in owned or k in read}


def input_chain(names: Iterable[str], params: Mapping[str, dict[str, int]]) -> tuple[tuple[str, dict[str, int]], ...]:
    """The ((transform, {params}), ...) chain of the input transformations among `names`;
    `params` maps a transform to its settings (e.g. {'llt': {'quality': 75}})."""
    return tuple((name, dict(TRANSFORMS[name][1], **params.get(name, {}))) for name in names if name in TRANSFORMS)


__all__ = ["DEFENSES", "FAMILIES", "DefendedClassifier", "DefenseSpec", "Hooks", "TRANSFORMS", "applicable", "apply_chain",
           "check_settings", "input_chain", "load_defended", "parse_spec", "readers", "training_config"]
