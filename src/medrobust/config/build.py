"""The configurations of the data and of the steps that train, attack and defend."""

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.labels import CLASSES, HEALTH_MAPS
from ..errors import ConfigError
from .settings import (ARCHITECTURE_NAMES, BASELINE_URI, CLASS_WEIGHTS, NORMS, SPLITS, Settings, at_least, between, each, eps_range, non_empty, positive, setting, split_fractions)

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

    def validate(self) -> None:
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
    target_sensitivity: float = setting(0.95, "operating point stored with the version: the malignancy threshold "
                                              "that catches this share of the validation split's cancers",
                                        check=between(0, 1, low_open=True, high_open=True))
    register: bool = setting(True, "register the model version in the MLflow registry")
    alias: str | None = setting("baseline", "registry alias set on the registered version; none: no alias")

    def validate(self) -> None:
        if self.weights not in ("none", "imagenet") and not Path(self.weights).is_file():
            raise ConfigError(f"weights file {self.weights} does not exist (give 'none' or a local weights file)",
                              ["weights"])


@dataclass(frozen=True)
class PoisonConfig(TrainConfig):
    """Train on labels flipped from a source class to a target class."""

    source: str = setting("nv", "class whose training labels are flipped", choices=CLASSES)
    target: str = setting("bkl", "class they are flipped to", choices=CLASSES)
    poison_fractions: tuple[float, ...] = setting((0.1,), "fractions of the source's training images flipped; "
                                                          "several: a sweep of nested runs",
                                                  check=lambda v: non_empty(v) or each(between(0, 1, low_open=True))(v))

    def validate(self) -> None:
        super().validate()
        if self.source == self.target:
            raise ConfigError(f"poison source and target are the same class ({self.source})", ["source", "target"])


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
                                          "smoothing, detector, squeeze, smooth, jpeg, llt")
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
    learning_rate: float = setting(5e-4, "retrain, distill, smoothing, detector: learning rate (a quarter of training's: it "
                                         "refines a trained network)", check=positive)
    batch_size: int = setting(64, "retrain, distill, smoothing, detector: images per training step", check=at_least(1))
    llt_quality: int = setting(75, "llt: WebP quality", check=between(1, 100))
    jpeg_quality: int = setting(75, "jpeg: JPEG quality", check=between(1, 100))
    smooth_window: int = setting(3, "smooth: median filter window", check=at_least(2))
    squeeze_bits: int = setting(5, "squeeze: bits per colour channel", check=between(1, 8))
    temperature: float = setting(20.0, "distill: temperature", check=positive)
    distill_epochs: int = setting(4, "distill: epochs of the student", check=at_least(1))
    sigma: float = setting(0.25, "smoothing: standard deviation of the Gaussian noise on [0, 1] images (Cohen: 0.12, "
                                 "0.25, 0.5)", check=between(0, 1, low_open=True))
    smoothing_epochs: int = setting(2, "smoothing: epochs of training under noise", check=at_least(1))
    smoothing_samples: int = setting(100, "smoothing: noisy copies voting on each prediction", check=at_least(2))
    smoothing_alpha: float = setting(0.001, "smoothing: abstain when the top two classes' vote differs at no better "
                                            "than this level", check=between(0, 1, low_open=True, high_open=True))
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


