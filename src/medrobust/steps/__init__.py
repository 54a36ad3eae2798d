"""The step table: each step is one entry naming its config dataclass, its `run_<step>`
function and its result type.

A step is a plain function `run_<step>(config) -> result` that the CLI, MLproject, a
pipeline, a tuning trial or a test calls in-process. The CLI generates one sub-command per
entry from its config dataclass (cli.py), and tests/test_project.py checks MLproject against
this table. Functions and results are named as "module:attribute" and imported on first use,
so `medrobust --help` does not load TensorFlow.
"""

from dataclasses import dataclass
from importlib import import_module

from ..config import AttackConfig, DefendConfig, MainConfig, PoisonConfig, PredictConfig, TrainConfig


@dataclass(frozen=True)
class Step:
    name: str
    config: type  # the config dataclass (medrobust.config)
    function: str  # "module:run_<step>" in medrobust.steps
    result: str  # "module:<Result>" in medrobust.steps
    summary: str
    tracked: bool = True  # opens an MLflow run

    def run(self, config):
        """Run the step on `config` (an instance of self.config) and return its result."""
        if not isinstance(config, self.config):
            raise TypeError(f"step {self.name} takes a {self.config.__name__}, got {type(config).__name__}")
        return _resolve(self.function)(config)

    @property
    def result_type(self):
        return _resolve(self.result)


def _resolve(reference):
    module, attribute = reference.split(":")
    return getattr(import_module(f"{__name__}.{module}"), attribute)


STEPS = {step.name: step for step in (
    Step("train", TrainConfig, "train:run_train", "train:TrainResult",
         "train a classifier, register it and point @baseline at it"),
    Step("poison", PoisonConfig, "poison:run_poison", "poison:PoisonResult",
         "train on labels flipped from a source to a target class (several fractions: a sweep)"),
    Step("attack", AttackConfig, "attack:run_attack", "attack:AttackResult",
         "attack a model (white-box, or transfer from a surrogate) and log clean against attacked metrics"),
    Step("defend", DefendConfig, "defend:run_defend", "defend:DefendResult",
         "defend a model, register the defended model @candidate and measure it before and after"),
    Step("main", MainConfig, "main:run_main", "main:MainResult",
         "the main job (make run): train the baseline, attack it, defend it, attack it again, in one parent run"),
    Step("predict", PredictConfig, "predict:run_predict", "predict:PredictResult",
         "class probabilities and the health call for image files, as CSV", tracked=False),
)}
