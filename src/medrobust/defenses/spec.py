"""What a registry entry is (DefenseSpec), what a builder reports through (Hooks) and the
training settings every training builder shares.

A builder is `build(classifier, data, config, hooks) -> DefendedClassifier`: it takes the
defended classifier built so far, the Dataset, the DefendConfig and a Hooks, and returns a new
DefendedClassifier (dataclasses.replace). A builder that trains may train `classifier.network`
in place: the defend step starts the fold from a copy of the parent network, and no caller
keeps the classifier it handed on.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ..config import DefendConfig, TrainConfig

FAMILIES = ("model", "data", "add-model", "input")


@dataclass(frozen=True)
class DefenseSpec:
    name: str
    family: str  # one of FAMILIES
    build: Callable  # build(classifier, data, config, hooks) -> DefendedClassifier
    settings: tuple[str, ...]  # the DefendConfig fields this defense reads
    summary: str  # one line: what it does, after whom, whose implementation

    def __post_init__(self):
        # Programming errors, caught at import.
        if self.family not in FAMILIES:
            raise TypeError(f"defense {self.name}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        known = DefendConfig.__dataclass_fields__
        unknown = [s for s in self.settings if s not in known]
        if unknown:
            raise TypeError(f"defense {self.name}: no DefendConfig field {', '.join(unknown)}")


class Hooks:
    """What a builder reports through, so that defenses never import tracking. The defend
    step passes a subclass that logs to MLflow; this one reports nothing."""

    def on_epoch(self, part: str, epoch: int, logs: dict[str, float]) -> None:
        """After each training epoch of `part` (e.g. 'retrain'): logs is {metric: value}."""

    def on_history(self, part: str, history: dict[str, list]) -> None:
        """Once `part` has trained: history is {metric: [value per epoch]}."""


def training_config(config: DefendConfig) -> TrainConfig:
    """The TrainConfig that a training defense hands to models.training.fit: the defend step's
    learning rate, batch size and seed; each builder sets its own epochs and patience."""
    return TrainConfig(data=config.data, epochs=1, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       seed=config.seed, experiment=config.experiment)
