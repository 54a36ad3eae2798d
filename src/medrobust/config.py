"""Typed configuration: every default in one place.

A step takes one of these dataclasses; the CLI, MLproject, a pipeline or a test builds it.
`flatten` turns one into the flat parameter dict that MLflow logs.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataConfig:
    # A HAM10000 or ISIC 2018 folder, or a dermamnist*.npz. None: $MEDROBUST_DATA, else download DermaMNIST.
    path: str | None = None
    image_size: int = 64
    fractions: tuple[float, float, float] = (0.70, 0.175, 0.125)  # train / val / test
    seed: int = 0
    # Keep about this many images per class (whole lesions), for quick runs and tests. None: all.
    per_class_limit: int | None = None
    health_map: str = "clinical"  # clinical | thesis
    cache_dir: str | None = None  # None: $MEDROBUST_CACHE, else ~/.cache/medrobust

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.per_class_limit is not None and self.per_class_limit < 3:
            raise ValueError(f"per_class_limit must be at least 3 (one image per split), got {self.per_class_limit}")
        if self.health_map not in ("clinical", "thesis"):
            raise ValueError(f"health_map must be 'clinical' or 'thesis', got {self.health_map!r}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    arch: str = "small_cnn"  # a name in medrobust.models.ARCHITECTURES
    weights: str = "none"  # none, or the path to a local ImageNet weights file (transfer learning)
    epochs: int = 14
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 6  # early stopping on validation macro recall; 0: train every epoch
    class_weight: str = "sqrt"  # balanced | sqrt | none (see README: sqrt keeps accuracy >= 0.70)
    augment: bool = True  # flips and 90-degree rotations: a lesion has no up or left
    head_epochs: int = 3  # with ImageNet weights: epochs on the head alone before fine-tuning
    fine_tune_lr_factor: float = 0.1
    seed: int = 0
    experiment: str = "medrobust"
    run_name: str | None = None
    register: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 0 or self.head_epochs < 0:
            raise ValueError("patience and head_epochs must be >= 0")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weights not in ("none", "imagenet") and not Path(self.weights).is_file():
            raise ValueError(f"weights file {self.weights} does not exist (give 'none' or a local weights file)")
        if self.class_weight not in ("balanced", "sqrt", "none"):
            raise ValueError(f"class_weight must be balanced, sqrt or none, got {self.class_weight!r}")


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



@dataclass(frozen=True)
class AttackConfig:
    model_uri: str = ""  # runs:/<id>/model, models:/<name>/<version> or models:/<name>@<alias>
    data: DataConfig = field(default_factory=DataConfig)  # image_size follows the model's input
    method: str = "fgsm"  # a name in medrobust.attacks.ATTACKS
    eps: float = 2 / 255  # on [0, 1] images; the thesis' FGSM budget
    norm: str = "inf"  # inf | 2
    target: str | None = None  # a class name (e.g. nv) for a targeted attack
    attack_model_uri: str | None = None  # surrogate for transfer attacks; None: white-box on the target
    split: str = "test"
    max_images: int | None = None  # attack only the first N images of the split
    steps: int = 10  # pgd / cw / deepfool iterations
    step_size: float | None = None  # pgd and uap_fast step; None: eps/4 (pgd), eps/5 (uap_fast)
    random_start: bool = True  # pgd
    uap_attacker: str = "fgsm"  # uap's inner attack: fgsm | pgd | deepfool
    uap_delta: float = 0.2  # uap stops at fooling rate 1 - delta
    uap_max_iter: int = 5  # uap passes over the attack set
    max_steps: int = 200  # uap_fast mini-batch steps
    target_fooling_rate: float = 0.8  # uap_fast stops there
    batch_size: int = 128
    seed: int = 0
    experiment: str = "medrobust"
    run_name: str | None = None

    def __post_init__(self):
        if not 0 <= self.eps <= 1:
            raise ValueError(f"eps must be in [0, 1] (images are on [0, 1]; 2/255 = 0.0078), got {self.eps}")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {self.split!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {self.max_images}")
        if not 0 < self.target_fooling_rate <= 1:
            raise ValueError(f"target_fooling_rate must be in (0, 1], got {self.target_fooling_rate}")


@dataclass(frozen=True)
class PoisonConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = "nv"  # relabel images of this class ...
    target: str = "bkl"  # ... as this one (the thesis' nv -> bkl)
    fractions: tuple[float, ...] = (0.1,)  # of the source's training images; several: a sweep of nested runs

    def __post_init__(self):
        if self.source.lower() == self.target.lower():
            raise ValueError(f"poison source and target are the same class ({self.source})")
        if not self.fractions:
            raise ValueError("give at least one poison fraction")
        for f in self.fractions:
            if not 0 < f <= 1:
                raise ValueError(f"poison fraction must be in (0, 1], got {f}")


@dataclass(frozen=True)
class MainConfig:
    """The main job (`make run`): train the baseline, attack it with each of `attacks`, defend
    it with `defense` and attack the defended model again."""

    train: TrainConfig = field(default_factory=TrainConfig)
    attacks: tuple[str, ...] = ("fgsm", "uap_fast")
    eps: float = 2 / 255  # the thesis' FGSM budget, used for every attack of the job
    # uap_fast's step limit here: 60 steps of 128 images cost about a minute on 2 cores and
    # keep `make run` inside its time budget (the attack step's own default is 200).
    uap_max_steps: int = 60
    # Then defend the model and measure it again. "none" stops after the attacks. Two rounds
    # of two epochs keep the job inside 25 minutes on 2 cores; the thesis' 5 x 5 (the defend
    # step's default) is GPU-scale.
    defense: str = "retrain+llt"
    rounds: int = 2
    epochs_per_round: int = 2

    def __post_init__(self):
        if not 0 <= self.eps <= 1:
            raise ValueError(f"eps must be in [0, 1] (images are on [0, 1]; 2/255 = 0.0078), got {self.eps}")
        if self.rounds < 1 or self.epochs_per_round < 1:
            raise ValueError("rounds and epochs_per_round must be at least 1")
        if self.uap_max_steps < 1:
            raise ValueError(f"uap_max_steps must be at least 1, got {self.uap_max_steps}")



@dataclass(frozen=True)
class DefendConfig:
    model_uri: str = ""  # the undefended parent: runs:/<id>/model or models:/<name>@<alias>
    data: DataConfig = field(default_factory=DataConfig)  # image_size follows the model's input
    defense: str = "retrain+llt"  # names from medrobust.defenses.DEFENSES joined by '+'
    # retrain: the thesis' rounds of offline adversarial examples
    rounds: int = 5
    ratio: float = 0.5  # of the retraining images perturbed each round
    epochs_per_round: int = 5
    retrain_attacks: tuple[str, ...] = ("fgsm",)  # several: the perturbed images are split between them
    retrain_eps: float = 2 / 255
    retrain_on: str = "train+val"  # the thesis retrained on both; "train" keeps val held out
    # Madry-style instead of rounds: fresh fgsm/pgd perturbations every batch, for
    # rounds x epochs_per_round epochs over the retraining images
    on_the_fly: bool = False
    learning_rate: float = 5e-4  # a quarter of training's: it refines a trained network
    batch_size: int = 64
    # input transformations
    llt_quality: int = 75
    jpeg_quality: int = 75
    smooth_window: int = 3
    squeeze_bits: int = 5
    # distill
    temperature: float = 20.0
    distill_epochs: int = 4
    # detector
    detector_attacks: tuple[str, ...] = ("fgsm",)
    detector_eps: float = 2 / 255
    detector_epochs: int = 5
    detector_threshold: float = 0.5
    # the attack suite measured at once, transfer (crafted on the parent) and white-box
    eval_attacks: tuple[str, ...] = ("fgsm", "uap_fast")
    eval_eps: float = 2 / 255
    uap_max_steps: int = 60
    max_images: int | None = None  # evaluate on the first N test images only
    seed: int = 0
    experiment: str = "medrobust"
    run_name: str | None = None
    register: bool = True
    alias: str = "candidate"

    def __post_init__(self):
        for name in ("llt_quality", "jpeg_quality"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= 100):
                raise ValueError(f"{name} must be an integer in 1..100, got {value!r}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        for name in ("rounds", "epochs_per_round", "batch_size", "distill_epochs", "detector_epochs", "uap_max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("retrain_eps", "detector_eps", "eval_eps"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1] (images are on [0, 1]), got {getattr(self, name)}")
        if not 0 < self.detector_threshold < 1:
            raise ValueError(f"detector_threshold must be in (0, 1), got {self.detector_threshold}")
        if self.retrain_on not in ("train", "train+val"):
            raise ValueError(f"retrain_on must be 'train' or 'train+val', got {self.retrain_on!r}")
        if self.smooth_window < 2 or not 1 <= self.squeeze_bits <= 8:
            raise ValueError("smooth_window must be >= 2 and squeeze_bits in 1..8")
        if not self.temperature > 0 or not self.learning_rate > 0:
            raise ValueError("temperature and learning_rate must be > 0")
        if not self.retrain_attacks or not self.detector_attacks:
            raise ValueError("retrain_attacks and detector_attacks need at least one attack")
