"""Reuse: each instance is keyed by its resolved configuration, its inputs and the code; a
finished run holding the key is reused, not redone."""

import hashlib
import json
import logging
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ... import __version__, tracking
from ...config import PipelineConfig, Settings, flatten
from .. import MODEL, STEPS
from .instances import Instance, build_config

log = logging.getLogger(__name__)

KEY_TAG, OUTPUT_TAG, NAME_TAG = "medrobust.pipeline_key", "medrobust.pipeline_output", "medrobust.pipeline_step"


def code_identity() -> dict[str, str | None]:
    """{version, source, commit}: the package version, a SHA-256 of its source files
    (uncommitted edits count) and the git commit of its checkout (None outside git)."""
    package = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": __version__, "source": digest.hexdigest(), "commit": commit}


def moving_inputs(step: str, config: Settings) -> dict[str, Any]:
    """What a step reads that its settings do not fix: the version a models:/<name>@<alias>
    URI points at now, and what the step's entry names (promote: the version its gate compares
    against, @robust)."""
    out = {}
    for key in [k for k, takes in STEPS[step].references.items() if MODEL in takes]:
        uri = getattr(config, key, None)
        if uri and "@" in str(uri):
            out[key] = tracking.pinned_uri(uri)
    return out | (STEPS[step].call("moving", config) or {})


def instance_key(step: str, config: Settings, inputs: Iterable[str], code: Mapping[str, str | None],
                 moving: Mapping[str, Any] | None = None) -> str:
    """SHA-256 over the step, its whole resolved configuration (the run name aside), the run
    ids it consumes, what it reads that moves (moving_inputs) and the code: the package version
    and its source hash. Not the git commit: a commit that changes only documents, tests or
    pipeline files would re-run every step, and an edit not yet committed would not."""
    settings = {k: v for k, v in flatten(config).items() if k != "run_name"}
    text = json.dumps({"step": step, "config": settings, "inputs": sorted(inputs), "moving": moving or {},
                       "code": {k: code[k] for k in ("version", "source")}}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _finished(experiment, key):
    """The newest finished run holding this key and its output, or None."""
    for run in tracking.finished_runs(experiment, {KEY_TAG: key}):
        if OUTPUT_TAG in run["tags"]:  # a run whose tags a kill cut short is not reused
            return run
    return None


def _reuse(instance, run):
    instance.run_id, instance.output, instance.reused = run["run_id"], run["tags"][OUTPUT_TAG], True
    if run["tags"].get("medrobust.gate") == "failed":
        instance.note = "gate failed (reused run; the reasons are the version's gate_reasons tag)"


def plan(instances: Sequence[Instance], config: PipelineConfig, code: Mapping[str, str | None],
         experiment: str) -> None:
    """Dry run: key every instance whose inputs are known and say which runs would be reused."""
    for instance in instances:
        if any(u.output is None for u in instance.upstream):
            instance.note = "would run (after a step it needs)"
            log.info("  %s: %s", instance.label, instance.note)
            continue
        step_config = build_config(instance, config)
        instance.key = instance_key(instance.spec.step, step_config, [u.run_id for u in instance.upstream], code,
                                    moving_inputs(instance.spec.step, step_config))
        found = None if config.rerun else _finished(experiment, instance.key)
        if found:
            _reuse(instance, found)
        instance.note = instance.note or ("would reuse" if found else "would run")
        log.info("  %s: %s%s", instance.label, instance.note, f" {instance.run_id}" if found else "")
