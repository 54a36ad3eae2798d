"""`medrobust pipeline FILE`: a YAML grid of steps run as one parent run, each step a nested run.

    settings:                    # every step whose config has the setting gets it
      data.image_size: 64
    steps:
      train:
        step: train
        grid: {arch: [small_cnn, mobile_cnn]}
      attack:
        step: attack
        with: {model_uri: "${train}", eps: 2/255}
        grid: {method: [fgsm, uap_fast]}
      report:
        step: report
        with: {runs: "${evaluate}"}

A step names an earlier step's output with "${name}": the model URI of train, poison and
defend (the registered version where there is one), the run id of every other step. A
reference in a single-valued setting fans out, one instance per instance of the step it names;
in a list setting (report's runs) it gathers them all. An instance combines only instances
of one lineage (an attack on the defended small_cnn never takes the small_resnet as its
surrogate by accident). Each instance is keyed by a hash of its full resolved configuration,
the run ids it consumes, the versions moving aliases point at, the package version and a hash
of the package source (the git commit is logged, not keyed: see instance_key):
a finished run of the experiment holding the same key is reused, not redone, so a pipeline
killed half-way resumes where it stopped and a changed setting re-runs exactly the instances
downstream of it. MLflow's multistep example keys on entry point and parameters only, and
misses code and upstream changes; this key does not.

Bad files fail before any run, naming the file and line: an unknown step, setting or key, a
reference to a step that does not exist or comes later, or into a setting that cannot take it,
a missing required setting, a value out of range, an unknown network or attack.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from ... import tracking
from ...config import PipelineConfig, flatten
from ...errors import GateFailed
from .. import STEPS
from ... import stopping
from .cache import KEY_TAG, NAME_TAG, OUTPUT_TAG, _finished, _reuse, code_identity, instance_key, moving_inputs, plan
from .instances import build_config, check, expand
from .spec import parse, split_overrides

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    run_id: str  # the parent run
    instances: list  # [{"name", "step", "label", "run_id", "output", "reused", "key", "note"}] in run order



def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run every instance of the pipeline at config.file in order, reusing finished ones."""
    specs = parse(config.file, split_overrides(config.overrides))
    instances = expand(specs, config.max_instances)
    check(instances, config)
    code = code_identity()
    log.info("pipeline %s: %d steps, %d runs to make or reuse", config.file, len(specs), len(instances))
    if config.dry_run:
        plan(instances, config, code, config.experiment)
        return PipelineResult(None, [_summary(i) for i in instances])
    tags = {"medrobust.step": "pipeline", "medrobust.pipeline": Path(config.file).name}
    with tracking.run(config.experiment, run_name=config.run_name or f"pipeline {Path(config.file).stem}",
                      tags=tags) as run_id:
        # Under `mlflow run` the runs land in the experiment it chose, not config.experiment.
        experiment = tracking.experiment_name(run_id)
        tracking.log_params(flatten(config) | {f"code.{k}": v for k, v in code.items()})
        tracking.log_text(Path(config.file).read_text(encoding="utf-8"), f"pipeline/{Path(config.file).name}")
        for n, instance in enumerate(instances, 1):
            stopping.checkpoint()
            step = STEPS[instance.spec.step]
            step_config = build_config(instance, config)
            instance.key = instance_key(step.name, step_config, [u.run_id for u in instance.upstream], code,
                                        moving_inputs(step.name, step_config))
            found = None if config.rerun else _finished(experiment, instance.key)
            if found:
                _reuse(instance, found)
                log.info("pipeline [%d/%d] %s: reused run %s", n, len(instances), instance.label, instance.run_id)
                continue
            log.info("pipeline [%d/%d] %s", n, len(instances), instance.label)
            try:
                result = step.run(step_config)
            except GateFailed as e:  # a verdict, not a failure of the pipeline: recorded, and on
                if e.result is None:
                    raise
                result, instance.note = e.result, f"gate failed: {e}"
                log.warning("pipeline: %s: %s", instance.label, instance.note)
            instance.run_id, instance.output = result.run_id, getattr(result, "output", result.run_id)
            tracking.tag_run(instance.run_id, {KEY_TAG: instance.key, OUTPUT_TAG: instance.output,
                                               NAME_TAG: instance.spec.name})
        summary = [_summary(i) for i in instances]
        tracking.log_json(summary, "pipeline/steps.json")
        tracking.log_metrics({"steps_run": sum(not i.reused for i in instances),
                              "steps_reused": sum(i.reused for i in instances),
                              "gates_failed": sum(i.note.startswith("gate failed") for i in instances)})
    log.info("pipeline %s: run %s, %d steps run, %d reused", config.file, run_id,
             sum(not i.reused for i in instances), sum(i.reused for i in instances))
    return PipelineResult(run_id, summary)


def _summary(i):
    return {"name": i.spec.name, "step": i.spec.step, "label": i.label, "run_id": i.run_id, "output": i.output,
            "reused": i.reused, "key": i.key, "note": i.note}


__all__ = ["KEY_TAG", "PipelineResult", "build_config", "check", "expand", "moving_inputs", "parse", "run_pipeline",
           "split_overrides"]
