"""Typed configuration: every setting defined once, with its type, default, help text and check.

A step takes one of these dataclasses. The CLI generates its options from them (cli.py), a
pipeline or a tuning trial builds one with `from_dict`, and MLflow logs `flatten(config)`.
`from_dict` coerces text ("32", "2/255", "true", "fgsm,pgd", "none") to each field's type, so
the CLI, MLproject and YAML all go through the same checks, and an unknown key is an error
naming it.
"""

import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from .data.labels import CLASSES, HEALTH_MAPS
from .errors import ConfigError

# The registered name every step defaults to: the latest network `train` registered.
BASELINE_URI = "models:/medrobust-small_cnn@baseline"
CANDIDATE_URI = "models:/medrobust-small_cnn@candidate"
CLASS_WEIGHTS = ("balanced", "sqrt", "none")  # see models.training.class_weights
# medrobust.models.ARCHITECTURES' names, here so a config is checked without importing TensorFlow
# (tests/test_models.py keeps the two equal).
ARCHITECTURE_NAMES = ("small_cnn", "resnet50", "inception_v3", "mobilenet_v2", "small_resnet")
NORMS = ("inf", "2")
SPLITS = ("train", "val", "test")
EPS_NOTE = "images are on [0, 1]; 2/255 = 0.0078"


def setting(default=MISSING, help="", *, factory=MISSING, check=None, choices=None, flag=None, positional=False,
            repeat=False):
    """A dataclass field with its help text and check. check(value) returns what is wrong (a
    phrase such as 'must be at least 1') or None; it is not called for None. choices: the
    allowed values (each element, for a tuple field). flag: the CLI option name when it is not
    the field's name; positional: a CLI positional argument; repeat: a text option that may be
    given several times (the CLI joins the values with commas)."""
    metadata = {"help": help, "check": check, "choices": choices, "flag": flag, "positional": positional,
                "repeat": repeat}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def between(low, high, *, low_open=False, high_open=False, note=""):
    """A check for low <= v <= high (either end open if asked); `note` explains the scale."""
    def check(v):
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        if above and below:
            return None
        text = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        return f"{text} ({note})" if note else text
    return check


def positive(v):
    return None if v > 0 else "must be > 0"


def each(check):
    def check_all(values):
        return next((f"{problem} (element {v!r})" for v in values if (problem := check(v))), None)
    return check_all


def non_empty(values):
    return None if len(values) else "needs at least one value"


eps_range = between(0, 1, note=EPS_NOTE)


def split_fractions(values):
    if min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        return "must be three positive numbers summing to 1"
    return None


# --- text to typed values (CLI, MLproject and YAML share it) -----------------------------------

NONE_TEXT = ("", "none", "None", "null")


def _number(text, kind):
    text = text.strip()
    if kind is float and "/" in text:  # 2/255: epsilons are read as people write them
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return kind(text)


def coerce(value, kind, name):
    """`value` (text, or already typed) as type `kind`; ConfigError naming `name` if it cannot be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.strip() in NONE_TEXT):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name)
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], name) for v in items)
        if len(items) != len(args):
            raise ConfigError(f"{name} takes {len(args)} comma-separated values, got {value!r}", [name])
        return tuple(coerce(v, a, name) for v, a in zip(items, args))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, float):
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return _number(value, kind)
            if kind is int and float(value) != int(value):
                raise ValueError
            return kind(value)
        if kind is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError
            return str(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise ConfigError(f"{name} must be {_type_name(kind)}, got {value!r}", [name]) from None
    raise TypeError(f"no coercion to {kind} for setting {name}")  # a field type we do not handle: a bug


def _type_name(kind):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) if a is not type(None) else "none" for a in args)
    if origin is tuple:
        return f"comma-separated {_type_name(args[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(kind, kind.__name__)


class Settings:
    """Checks every field on creation, builds from and turns into plain dicts."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or is_dataclass(value):
                continue
            choices = f.metadata.get("choices")
            if choices is not None:
                for v in value if isinstance(value, tuple) else (value,):
                    if v not in choices:
                        raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {v!r}", [f.name])
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{f.name} {problem}, got {value!r}", [f.name])
        self.validate()

    def validate(self):
        """Checks across fields; a subclass raises ConfigError naming the settings."""

    @classmethod
    def from_dict(cls, values):
        """An instance from {name: value}: nested dicts (or dotted keys such as 'data.image_size')
        for nested settings, text or typed values. Unknown keys are refused by name."""
        nested, own = {}, {}
        for key, value in dict(values).items():
            head, dot, rest = key.partition(".")
            if dot:
                nested.setdefault(head, {})[rest] = value
            else:
                own[key] = value
        by_name = {f.name: f for f in fields(cls)}
        unknown = sorted((set(own) | set(nested)) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                              f"{cls.__name__}; expected {', '.join(by_name)}", unknown)
        kwargs = {}
        for name, f in by_name.items():
            if is_dataclass(f.type):
                part = own.get(name, {})
                if isinstance(part, f.type):
                    part = part.to_dict()
                if not isinstance(part, dict):
                    raise ConfigError(f"{name} takes a mapping of {f.type.__name__} settings, got {part!r}", [name])
                if part or name in nested:
                    try:
                        kwargs[name] = f.type.from_dict(part | nested.get(name, {}))
                    except ConfigError as e:  # the settings at fault, dotted as the caller spells them
                        raise ConfigError(str(e), [f"{name}.{s}" for s in e.settings]) from None
            elif name in own:
                kwargs[name] = coerce(own[name], f.type, name)
        return cls(**kwargs)

    def to_dict(self):
        """{name: value}, nested settings as nested dicts; from_dict(to_dict()) gives an equal config."""
        return asdict(self)


def flatten(config, prefix=""):
    """Flat {name: value} of a (nested) config dataclass; nested names are dotted (data.image_size)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out.update(flatten(value, prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def narrow(config, cls):
    """The `cls` view of a config that has all of cls's fields (a PoisonConfig as a TrainConfig)."""
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


# --- the configurations ------------------------------------------------------------------------

@dataclass(frozen=True)
class DataConfig(Settings):
    path: str | None = setting(None, "HAM10000 or ISIC 2018 folder, or a dermamnist*.npz, made absolute; none: "
                                     "$MEDROBUST_DATA, else DermaMNIST downloaded into the cache", flag="data")
    image_size: int = setting(64, "square input size in pixels (a step on a trained model uses the model's)",
                              check=at_least(8))
    fractions: tuple[float, float, float] = setting((0.70, 0.175, 0.125), "train,val,test fractions of the "
                                                    "lesion-grouped split", check=split_fractions)
    split_seed: int = setting(0, "seed of the split and of the per-class subset")
    per_class_limit: int | None = setting(None, "keep about this many images per class (whole lesions); none: all",
                                          check=at_least(3))
    health_map: str = setting("clinical", "which classes count as malignant: clinical (akiec, bcc, mel) or "
                                          "thesis (nv too)", choices=tuple(HEALTH_MAPS))
    cache_dir: str | None = setting(None, "decoded-image cache; none: $MEDROBUST_CACHE, else ~/.cache/medrobust")

    def validate(self):
        # Read once, here, as an absolute path: a later change of folder cannot break it, and
        # the run logs where the data really was.
        path = self.path or os.environ.get("MEDROBUST_DATA") or None
        if path:
            object.__setattr__(self, "path", str(Path(path).expanduser().absolute()))


@dataclass(frozen=True)
class StepConfig(Settings):
    """What every tracked step has: where its run goes and its seed."""

    experiment: str = setting("medrobust", "MLflow experiment (a step inside an active run joins that run's)")
    run_name: str | None = setting(None, "MLflow run name; none: the step's own")
    seed: int = setting(0, "seed of training, attacks and defenses")


@dataclass(frozen=True)
class TrainConfig(StepConfig):
    data: DataConfig = setting(factory=DataConfig)
    arch: str = setting("small_cnn", "network from medrobust.models.ARCHITECTURES", choices=ARCHITECTURE_NAMES)
    weights: str = setting("none", "none, or the path of a local ImageNet weights file (transfer learning)")
    epochs: int = setting(14, "training epochs (at most, with early stopping)", check=at_least(1))
    batch_size: int = setting(64, "images per training step", check=at_least(1))
    learning_rate: float = setting(2e-3, "Adam's initial learning rate (cosine decay)", check=positive)
    patience: int = setting(6, "early stopping on validation macro recall after this many epochs without "
                               "improvement; 0: train every epoch", check=at_least(0))
    weight_decay: float = setting(0.0, "decoupled weight decay (AdamW) per step, relative to the learning rate; "
                                       "0: plain Adam", check=at_least(0))
    dropout: float = setting(0.3, "dropout rate before the dense head", check=between(0, 1, high_open=True))
    width: float = setting(1.0, "channel multiplier of small_cnn (1: stages of 32, 64, 128, 256), small_resnet "
                                "(32, 64, 128) and mobilenet_v2 (its alpha); other networks take only 1", check=positive)
    distribute: str = setting("none", "mirrored: train on every visible GPU with tf.distribute.MirroredStrategy "
                                      "(batch_size is the global batch, split across them); none: one device",
                              choices=("none", "mirrored"))
    class_weight: str = setting("sqrt", "loss weights against the class imbalance: balanced, its square root (sqrt) "
                                        "or none", choices=CLASS_WEIGHTS)
    augment: bool = setting(True, "flips and 90-degree rotations (a lesion has no up or left)")
    head_epochs: int = setting(3, "with ImageNet weights: epochs on the head alone before fine-tuning",
                               check=at_least(0))
    fine_tune_lr_factor: float = setting(0.1, "with ImageNet weights: fine-tuning learning rate over learning_rate",
                                         check=positive)
    register: bool = setting(True, "register the model version in the MLflow registry")
    alias: str | None = setting("baseline", "registry alias set on the registered version; none: no alias")

    def validate(self):
        if self.weights not in ("none", "imagenet") and not Path(self.weights).is_file():
            raise ConfigError(f"weights file {self.weights} does not exist (give 'none' or a local weights file)")


@dataclass(frozen=True)
class PoisonConfig(TrainConfig):
    """Train on labels flipped from a source class to a target class."""

    source: str = setting("nv", "class whose training labels are flipped", choices=CLASSES)
    target: str = setting("bkl", "class they are flipped to", choices=CLASSES)
    poison_fractions: tuple[float, ...] = setting((0.1,), "fractions of the source's training images flipped; "
                                                          "several: a sweep of nested runs",
                                                  check=lambda v: non_empty(v) or each(between(0, 1, low_open=True))(v))

    def validate(self):
        super().validate()
        if self.source == self.target:
            raise ConfigError(f"poison source and target are the same class ({self.source})")


@dataclass(frozen=True)
class ModelStepConfig(StepConfig):
    """What a step on a trained model has: the model and the data (its image size follows the model's input)."""

    model_uri: str = setting(BASELINE_URI, "the model: runs:/<id>/model or models:/<name>@<alias> (defend: the "
                                           "undefended parent)")
    data: DataConfig = setting(factory=DataConfig)


@dataclass(frozen=True)
class AttackConfig(ModelStepConfig):
    method: str = setting("fgsm", "attack from medrobust.attacks.ATTACKS: fgsm, pgd, apgd, apgd_t, square, autoattack, "
                                  "health, cw, cw_pgd, deepfool, uap, uap_fast (and ART's fgsm_art, pgd_art, "
                                  "apgd_art, autoattack_art)")
    eps: float = setting(2 / 255, "perturbation budget on [0, 1] images (2/255 is accepted as written)",
                         check=eps_range)
    norm: str = setting("inf", "budget norm", choices=NORMS)
    target: str | None = setting(None, "class every image is pushed to (a targeted attack); none: untargeted",
                                 choices=CLASSES)
    attack_model_uri: str | None = setting(None, "surrogate model for a transfer attack; none: white-box on the model")
    split: str = setting("test", "which split is attacked", choices=SPLITS)
    max_images: int | None = setting(None, "attack a class-stratified sample of N images of the split (seeded)", check=at_least(1))
    batch_size: int = setting(128, "images per attack batch", check=at_least(1))
    # Settings of some attacks only; giving one to an attack that does not take it is an error.
    steps: int = setting(10, "pgd, apgd, cw, cw_pgd, deepfool: iterations", check=at_least(1))
    restarts: int = setting(1, "pgd, apgd, apgd_t, square, health: random starts", check=at_least(1))
    loss: str = setting("ce", "apgd: the loss raised, cross-entropy or Croce & Hein's DLR", choices=("ce", "dlr"))
    n_targets: int = setting(9, "apgd_t, autoattack: target classes tried (at most K - 1)", check=at_least(1))
    queries: int = setting(5000, "square, autoattack: Square's queries", check=at_least(1))
    step_size: float | None = setting(None, "pgd, cw_pgd, uap_fast: step; none: eps/4 (pgd, cw_pgd), eps/5 (uap_fast)",
                                      check=positive)
    random_start: bool = setting(True, "pgd, cw_pgd: start from a random point of the eps-ball")
    uap_attacker: str = setting("fgsm", "uap: the inner attack", choices=("fgsm", "pgd", "deepfool"))
    uap_delta: float = setting(0.2, "uap: stop at fooling rate 1 - delta", check=between(0, 1, low_open=True, high_open=True))
    uap_max_iter: int = setting(5, "uap: passes over the attack set", check=at_least(1))
    max_steps: int = setting(200, "uap_fast: mini-batch steps", check=at_least(1))
    target_fooling_rate: float = setting(0.8, "uap_fast: stop at this fooling rate", check=between(0, 1, low_open=True))


@dataclass(frozen=True)
class DefendConfig(ModelStepConfig):
    defense: str = setting("retrain+llt", "names from medrobust.defenses.DEFENSES joined by '+': distill, retrain, "
                                          "detector, squeeze, smooth, jpeg, llt")
    # retrain: the thesis' rounds of offline adversarial examples
    rounds: int = setting(5, "retrain: rounds of fresh adversarial examples", check=at_least(1))
    ratio: float = setting(0.5, "retrain: share of the retraining images perturbed each round",
                           check=between(0, 1, low_open=True))
    epochs_per_round: int = setting(5, "retrain: epochs per round", check=at_least(1))
    retrain_attacks: tuple[str, ...] = setting(("fgsm",), "retrain: attacks crafting the images (several split them "
                                                          "evenly)", check=non_empty)
    retrain_eps: float = setting(2 / 255, "retrain: budget of the retraining attacks", check=eps_range)
    retrain_on: str = setting("train+val", "retrain: images retrained on (the thesis used both; train keeps val "
                                           "held out)", choices=("train", "train+val"))
    on_the_fly: bool = setting(False, "retrain Madry-style: fresh fgsm or pgd perturbations every batch, for "
                                      "rounds x epochs_per_round epochs")
    retrained_uri: str = setting("", "retrain: an earlier `retrain` defense of the same parent with the same retrain "
                                     "settings, whose network a combination (retrain+llt) takes instead of "
                                     "retraining (deterministic by seed: the network it would make)")
    learning_rate: float = setting(5e-4, "retrain, distill, detector: learning rate (a quarter of training's: it "
                                         "refines a trained network)", check=positive)
    batch_size: int = setting(64, "retrain, distill, detector: images per training step", check=at_least(1))
    llt_quality: int = setting(75, "llt: WebP quality", check=between(1, 100))
    jpeg_quality: int = setting(75, "jpeg: JPEG quality", check=between(1, 100))
    smooth_window: int = setting(3, "smooth: median filter window", check=at_least(2))
    squeeze_bits: int = setting(5, "squeeze: bits per colour channel", check=between(1, 8))
    temperature: float = setting(20.0, "distill: temperature", check=positive)
    distill_epochs: int = setting(4, "distill: epochs of the student", check=at_least(1))
    detector_attacks: tuple[str, ...] = setting(("fgsm",), "detector: attacks it is trained on", check=non_empty)
    detector_eps: float = setting(2 / 255, "detector: budget of those attacks", check=eps_range)
    detector_epochs: int = setting(5, "detector: training epochs", check=at_least(1))
    detector_threshold: float = setting(0.5, "detector: reject when P(adversarial) >= this",
                                        check=between(0, 1, low_open=True, high_open=True))
    # the attack suite measured at once, transfer (crafted on the parent) and white-box
    eval_attacks: tuple[str, ...] = setting(("fgsm", "uap_fast"), "attacks measured on the defended model, transfer "
                                                                   "and white-box")
    eval_eps: float = setting(2 / 255, "budget of those attacks", check=eps_range)
    uap_max_steps: int = setting(60, "uap_fast's step limit wherever the step runs it", check=at_least(1))
    max_images: int | None = setting(None, "measure on a class-stratified sample of N test images (seeded)", check=at_least(1))
    target_sensitivity: float = setting(0.95, "operating point stored in the defended model: the malignancy threshold "
                                              "that catches this share of the validation split's cancers",
                                        check=between(0, 1, low_open=True, high_open=True))
    register: bool = setting(True, "register the defended model as a new version")
    alias: str | None = setting("candidate", "registry alias of the defended version; none: no alias")


EVALUATE_SUITES = ("thesis", "standard", "adaptive", "autoattack", "health", "full")


@dataclass(frozen=True)
class SuiteConfig(ModelStepConfig):
    """The attack suites a model is measured with and their settings: what `evaluate` runs, and
    what a `promote` gate runs (or reuses, when an evaluate run of the version matches)."""

    suites: tuple[str, ...] = setting(("standard",), "presets: thesis (fgsm, uap, uap_fast, transfer), standard "
                                                     "(AutoAttack's standard version: APGD-CE, APGD-T, Square, "
                                                     "white-box; fgsm and pgd, white-box and transfer), adaptive (white-box "
                                                     "through the whole defense: BPDA, APGD-CE, a joint attack on "
                                                     "classifier and detector), autoattack (AutoAttack alone, "
                                                     "white-box), health (APGD on the malignancy score against the "
                                                     "operating threshold), full (thesis, standard, adaptive, health "
                                                     "+ security curves); every suite adds the per-image worst case "
                                                     "over its attacks, the ensemble row",
                                      choices=EVALUATE_SUITES, check=non_empty)
    eps: float = setting(2 / 255, "budget of the suites' attacks", check=eps_range)
    curve_eps: tuple[float, ...] = setting((0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
                                           "full: the budgets of the security curves", check=lambda v: non_empty(v)
                                           or each(eps_range)(v))
    curve_attacks: tuple[str, ...] = setting(("fgsm", "pgd", "uap_fast"), "full: the attacks of the security curves",
                                             check=non_empty)
    max_images: int | None = setting(None, "measure a class-stratified sample of N images (seeded; CPU budgets)", check=at_least(1))
    target_sensitivity: float = setting(0.95, "operating point: the malignancy threshold is chosen on the validation "
                                              "split to catch this share of cancers",
                                        check=between(0, 1, low_open=True, high_open=True))
    n_resamples: int = setting(1000, "bootstrap resamples of the test images for the 95 % intervals", check=at_least(10))
    pgd_steps: int = setting(20, "pgd: iterations (random start)", check=at_least(1))
    cw_steps: int = setting(20, "cw_pgd: iterations (random start)", check=at_least(1))
    uap_max_steps: int = setting(60, "uap_fast: mini-batch steps", check=at_least(1))
    uap_max_iter: int = setting(1, "uap (ART): passes over the images", check=at_least(1))
    apgd_steps: int = setting(100, "apgd, autoattack's APGD-CE and APGD-T, health: iterations (RobustBench: 100)",
                              check=at_least(1))
    square_queries: int = setting(5000, "autoattack's Square: queries (RobustBench: 5000)", check=at_least(1))
    apgd_targets: int = setting(9, "apgd_t and autoattack's APGD-T: target classes, at most K - 1 (RobustBench: 9)",
                                check=at_least(1))
    health_restarts: int = setting(1, "health: random starts of its APGD", check=at_least(1))


@dataclass(frozen=True)
class EvaluateConfig(SuiteConfig):
    """A model (plain or defended) measured clean and under an attack suite: a report."""

    split: str = setting("test", "images measured; all: every image of the data (an external test set)",
                         choices=(*SPLITS, "all"))
    attack_model_uri: str | None = setting(None, "surrogate for transfer attacks; none: a defended model's "
                                                 "undefended parent (transfer rows are left out for a plain model)")
    threshold: float | None = setting(None, "operating point given, not chosen (e.g. for an external set with no "
                                            "validation split); none: chosen on the validation split",
                                      check=between(0, 1))


TUNE_OBJECTIVES = ("attack_eps", "poison_fraction", "defense", "train")


@dataclass(frozen=True)
class TuneConfig(ModelStepConfig):
    """One Optuna study; every trial a nested run calling the steps themselves."""

    objective: str = setting("attack_eps", "attack_eps: smallest eps reaching a fooling rate; poison_fraction: the "
                                           "flip fraction doing most harm per flipped label; defense: retraining "
                                           "settings maximising robust macro recall; train: training settings "
                                           "maximising validation macro recall", choices=TUNE_OBJECTIVES)
    n_trials: int = setting(8, "trials this worker runs", check=at_least(1))
    timeout: float | None = setting(None, "stop starting trials after this many seconds; none: no limit",
                                    check=positive)
    study_name: str | None = setting(None, "Optuna study (workers sharing one give the same); none: medrobust-<objective>")
    storage: str | None = setting(None, "Optuna storage URL (sqlite:///..., postgresql://...); none: optuna.db beside "
                                        "the SQLite tracking store")
    heartbeat: int = setting(30, "seconds between a trial's heartbeats; a trial silent for twice this is failed "
                                 "and retried by the next worker", check=at_least(1))
    max_images: int | None = setting(300, "attack_eps, defense: a class-stratified sample of N test images",
                                     check=at_least(1))
    # attack_eps
    method: str = setting("fgsm", "attack_eps: the attack")
    eps_max: float = setting(16 / 255, "attack_eps: the largest budget searched", check=eps_range)
    eps_step: float = setting(1 / 255, "attack_eps: the search step (the answer is a multiple of it)",
                              check=between(0, 1, low_open=True))
    target_fooling_rate: float = setting(0.5, "attack_eps: the fooling rate to reach",
                                         check=between(0, 1, low_open=True))
    # poison_fraction
    source: str = setting("nv", "poison_fraction: class whose training labels are flipped", choices=CLASSES)
    target: str = setting("bkl", "poison_fraction: class they are flipped to", choices=CLASSES)
    fraction_max: float = setting(0.6, "poison_fraction: the largest fraction searched", check=between(0, 1, low_open=True))
    fnr_increase: float = setting(0.05, "poison_fraction: report the smallest fraction raising FNR this much",
                                  check=between(0, 1))
    trial_epochs: int = setting(6, "poison_fraction, train: training epochs per trial", check=at_least(1))
    # defense
    defense: str = setting("retrain+llt", "defense: the spec tuned (retrain settings, llt quality)")
    suites: tuple[str, ...] = setting(("adaptive",), "defense: evaluate suites measuring each trial",
                                      choices=EVALUATE_SUITES, check=non_empty)
    max_rounds: int = setting(3, "defense: most retrain rounds tried", check=at_least(1))
    max_accuracy_loss: float = setting(0.05, "defense: trials losing more clean accuracy are infeasible",
                                       check=between(0, 1))
    multi_objective: bool = setting(False, "defense: the Pareto front of robust macro recall against clean FNR")

    def validate(self):
        if self.fraction_max < 0.05:
            raise ConfigError(f"fraction_max must be at least 0.05 (the search step), got {self.fraction_max!r}")
        if self.eps_step > self.eps_max:
            raise ConfigError(f"eps_step {self.eps_step:g} is larger than eps_max {self.eps_max:g}")


@dataclass(frozen=True)
class PromoteConfig(SuiteConfig):
    """A registry gate: the version at model_uri is evaluated with the suite settings (or an
    evaluate run of it with the same settings is reused) and moves to @robust only if it passes
    every criterion."""

    model_uri: str = setting(CANDIDATE_URI, "the version to promote: models:/<name>@<alias> or models:/<name>/<version>")
    suites: tuple[str, ...] = setting(("standard", "health"), "evaluate suites of the gate", choices=EVALUATE_SUITES,
                                      check=non_empty)
    min_robust_macro_recall: float | None = setting(0.35, "pass only if the worst macro recall under attack is at least "
                                                          "this; none: not checked", check=between(0, 1))
    max_attacked_fnr: float | None = setting(0.5, "pass only if the worst FNR under attack at the operating point "
                                                  "(op_fnr) is at most this; none: not checked", check=between(0, 1))
    max_accuracy_loss: float | None = setting(0.03, "pass only if clean accuracy is at most this below the current "
                                                    "@robust version's on the same images; none: not checked",
                                              check=between(0, 1))
    reuse: bool = setting(True, "reuse a finished evaluate run of this version with the same settings")
    alias: str = setting("robust", "alias the version moves to on a pass")
    previous_alias: str = setting("previous", "alias the replaced version gets")


@dataclass(frozen=True)
class ReportConfig(StepConfig):
    """The recap across evaluate runs: the comparison table and the thesis' recap curves."""

    runs: tuple[str, ...] = setting((), "evaluate run ids to compare; none given: every finished evaluate run of "
                                        "--experiment, the latest per model", positional=True)
    metrics: tuple[str, ...] = setting(("accuracy", "macro_recall", "macro_specificity", "fnr", "op_fnr",
                                        "delta_accuracy", "delta_fnr"),
                                       "figures compared (the evaluate step's metric names; delta_*: a defended "
                                       "model minus its parent on the same images, paired interval)",
                                       check=non_empty)


@dataclass(frozen=True)
class PipelineConfig(StepConfig):
    """A YAML grid of steps (pipelines/*.yaml) run as one parent run, each step a nested run;
    a step already finished with the same configuration, inputs and code is reused."""

    file: str = setting("pipelines/quick.yaml", "the pipeline file", positional=True)
    overrides: str | None = setting(None, "STEP.SETTING=VALUE: a change of the file for this run (STEP may be "
                                          "`settings`); repeat --set, or join several with commas",
                                    flag="set", repeat=True)
    rerun: bool = setting(False, "run every step again instead of reusing finished ones")
    dry_run: bool = setting(False, "print the steps and which would be reused; run nothing")
    max_instances: int = setting(1000, "refuse a file whose grids make more runs than this", check=at_least(1))


@dataclass(frozen=True)
class BaselineConfig(TrainConfig):
    """The baseline job (`make baseline`): train the baseline, attack it with each of `attacks`, defend
    it with `defense` and attack the defended model again, all nested under one run."""

    attacks: tuple[str, ...] = setting(("fgsm", "uap_fast"), "attacks run on the baseline, white-box")
    eps: float = setting(2 / 255, "budget of every attack of the job (the thesis' FGSM budget)", check=eps_range)
    # 60 uap_fast steps of 128 images cost about a minute on 2 cores and keep `make baseline` inside
    # 30 minutes (the attack step's own default is 200).
    uap_max_steps: int = setting(60, "uap_fast's step limit", check=at_least(1))
    # Two rounds of two epochs keep the job inside 30 minutes on 2 cores; the thesis' 5 x 5 (the
    # defend step's default) is GPU-scale.
    defense: str = setting("retrain+llt", "defense built and measured after the attacks; none: stop after them")
    rounds: int = setting(2, "retrain rounds", check=at_least(1))
    epochs_per_round: int = setting(2, "retrain epochs per round", check=at_least(1))
    evaluate_suites: tuple[str, ...] | None = setting(("standard", "adaptive", "health"), "evaluate suites run last, on the "
                                               "defended model (the baseline with defense none); none: no evaluate run",
                                               choices=EVALUATE_SUITES)
    # 500 of the 1,252 test images keep the evaluate run near eight minutes on 2 cores.
    evaluate_images: int | None = setting(500, "evaluate: a class-stratified sample of N test images; none: all",
                                          check=at_least(1))


@dataclass(frozen=True)
class PredictConfig(Settings):
    """Class probabilities and the health call for image files (no MLflow run)."""

    inputs: tuple[str, ...] = setting((), "image files or folders", check=non_empty, positional=True)
    model_uri: str = setting(BASELINE_URI, "runs:/<id>/model or models:/<name>@<alias> (defended or not)")
    output: str = setting("-", "CSV file to write; -: standard output")
    health_map: str = setting("clinical", "which classes count as malignant", choices=tuple(HEALTH_MAPS))
    threshold: float | None = setting(None, "operating point on the malignancy score; none: the model version's "
                                            "operating_threshold tag (set by evaluate), if any", check=between(0, 1))
