"""The step table: each step is one entry naming its config dataclass, its `run_<step>`
function and its result type.

A step is a plain function `run_<step>(config) -> result` that the CLI, MLproject, a
pipeline, a tuning trial or a test calls in-process. An entry also says what a pipeline needs
to know about the step (what it outputs, which settings name an instance, take references or
are required, how settings given once to a grid are routed), so the pipeline names no step. The CLI generates one sub-command per
entry from its config dataclass (cli.py), and tests/steps/test_project.py checks MLproject against
this table. Functions and results are named as "module:attribute" and imported on first use,
so `medrobust --help` does not load TensorFlow.
"""

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from ..config import (AttackConfig, BaselineConfig, DefendConfig, EvaluateConfig, PipelineConfig, PoisonConfig, PredictConfig,
                      PromoteConfig, ReportConfig, Settings, TrainConfig, TuneConfig)


MODEL, RUN = "model", "run"  # what a step hands the next: a model URI, or its run id


@dataclass(frozen=True)
class Step:
    name: str
    config: type  # the config dataclass (medrobust.config)
    function: str  # "module:run_<step>" in medrobust.steps
    result: str  # "module:<Result>" in medrobust.steps
    summary: str
    tracked: bool = True  # opens an MLflow run
    # --- what a pipeline reads (steps/pipeline/) ---
    in_pipeline: bool = False
    output: str = RUN  # MODEL: the result's `output` (a model URI); RUN: its run id
    named_by: tuple = ()  # the settings that name an instance ("attack fgsm 2/255 on small_cnn")
    required: tuple = ()  # settings a pipeline must give: a moving alias would make its result depend on the last run
    references: dict = field(default_factory=dict)  # {setting: (MODEL or step names whose output it takes)}
    route: str | None = None  # "module:function(grid, values) -> values": a setting given once to a grid goes to
    #                           the instances that read it; raises ConfigError (with its settings) for one none reads
    check: str | None = None  # "module:function(config)": what the config cannot check itself, before any run
    moving: str | None = None  # "module:function(config) -> {name: value}": inputs beyond the model alias that move
    referred: str | None = None  # "module:function(with) -> problem or None": may this step's output be referred to

    def run(self, config: Settings) -> Any:
        """Run the step on `config` (an instance of self.config) and return its result."""
        if not isinstance(config, self.config):
            raise TypeError(f"step {self.name} takes a {self.config.__name__}, got {type(config).__name__}")
        return _resolve(self.function)(config)

    @property
    def result_type(self) -> type:
        return _resolve(self.result)

    def call(self, hook: str, *args: Any) -> Any:
        """The entry's `hook` (route, check, moving, referred) called on args; None where the
        entry has none."""
        reference = getattr(self, hook)
        return _resolve(reference)(*args) if reference else None

    def takes(self, setting: str, step: "Step") -> bool:
        """Whether `setting` of this step may take the output of `step` (a Step)."""
        accepted = self.references.get(setting, ())
        return step.name in accepted or (step.output in accepted)


def _resolve(reference):
    module, attribute = reference.split(":")
    return getattr(import_module(f"{__name__}.{module}"), attribute)


def step(name: str, config: type[Settings], summary: str, **kw: Any) -> Step:
    """A table entry by convention: function run_<name> and result <Name>Result in module <name>."""
    return Step(name, config, f"{name}:run_{name}", f"{name}:{name.capitalize()}Result", summary, **kw)


MODELS = {"model_uri": (MODEL,), "attack_model_uri": (MODEL,)}
STEPS = {s.name: s for s in (
    step("train", TrainConfig, "train a classifier, register it and point @baseline at it",
         in_pipeline=True, output=MODEL, named_by=("arch",)),
    step("poison", PoisonConfig, "train on labels flipped from a source to a target class (several fractions: a sweep)",
         in_pipeline=True, output=MODEL, named_by=("arch", "poison_fractions"), referred="poison:referred"),
    step("attack", AttackConfig, "attack a model (white-box, or transfer from a surrogate); clean against attacked",
         in_pipeline=True, named_by=("method", "eps"), required=("model_uri",), references=MODELS,
         route="attack:route", check="attack:check_request"),
    step("defend", DefendConfig, "defend a model, register the defended model @candidate, measure it before and after",
         in_pipeline=True, output=MODEL, named_by=("defense",), required=("model_uri",),
         references=MODELS | {"retrained_uri": ("defend",)}, route="defend:route"),
    step("evaluate", EvaluateConfig, "measure a model under attack suites, with 95 % intervals and the operating point",
         in_pipeline=True, named_by=("suites",), required=("model_uri",), references=MODELS),
    step("tune", TuneConfig, "an Optuna study (attack_eps, poison_fraction, defense, train), each trial a nested run",
         in_pipeline=True, named_by=("objective",), references=MODELS),
    step("promote", PromoteConfig, "gate a version (default @candidate) on an evaluate suite; pass: it becomes @robust",
         in_pipeline=True, required=("model_uri",), references=MODELS, moving="promote:moving_inputs"),
    step("report", ReportConfig, "the recap across evaluate runs: one comparison table and the thesis' recap curves",
         in_pipeline=True, required=("runs",), references={"runs": ("evaluate",)}),
    step("pipeline", PipelineConfig, "a YAML grid of steps as one parent run; finished steps with the same inputs "
                                     "and code are reused, so a killed pipeline resumes"),
    step("baseline", BaselineConfig, "the baseline job (make baseline): train, attack, defend, attack again, evaluate, in one parent run"),
    step("predict", PredictConfig, "class probabilities and the health call for image files, as CSV", tracked=False),
)}
