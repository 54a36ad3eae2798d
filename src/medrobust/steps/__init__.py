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

from ..config import (AttackConfig, BaselineConfig, DefendConfig, EvaluateConfig, PipelineConfig, PoisonConfig, PredictConfig,
                      PromoteConfig, ReportConfig, TrainConfig, TuneConfig)


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


def step(name, config, summary, **kw):
    """A table entry by convention: function run_<name> and result <Name>Result in module <name>."""
    return Step(name, config, f"{name}:run_{name}", f"{name}:{name.capitalize()}Result", summary, **kw)


STEPS = {s.name: s for s in (
    step("train", TrainConfig, "train a classifier, register it and point @baseline at it"),
    step("poison", PoisonConfig, "train on labels flipped from a source to a target class (several fractions: a sweep)"),
    step("attack", AttackConfig, "attack a model (white-box, or transfer from a surrogate); clean against attacked"),
    step("defend", DefendConfig, "defend a model, register the defended model @candidate, measure it before and after"),
    step("evaluate", EvaluateConfig, "measure a model under attack suites, with 95 % intervals and the operating point"),
    step("tune", TuneConfig, "an Optuna study (attack_eps, poison_fraction, defense, train), each trial a nested run"),
    step("promote", PromoteConfig, "gate a version (default @candidate) on an evaluate suite; pass: it becomes @robust"),
    step("report", ReportConfig, "the recap across evaluate runs: one comparison table and the thesis' recap curves"),
    step("pipeline", PipelineConfig, "a YAML grid of steps as one parent run; finished steps with the same inputs "
                                     "and code are reused, so a killed pipeline resumes"),
    step("baseline", BaselineConfig, "the baseline job (make baseline): train, attack, defend, attack again, evaluate, in one parent run"),
    step("predict", PredictConfig, "class probabilities and the health call for image files, as CSV", tracked=False),
)}
