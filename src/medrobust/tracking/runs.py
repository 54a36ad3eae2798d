"""Runs: their lifecycle (nesting, FAILED/KILLED on an exception, orphans of killed processes)
and what a step logs into the active run."""

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from .. import stopping
from ..errors import Stopped
from . import registry
from .process import HOST_TAG, PID_TAG, gone, this_process
from .store import configure, experiment_id

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..data import Dataset

log = logging.getLogger(__name__)


@contextmanager
def run(experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None) -> Iterator[str]:
    """Start a run and yield its id; it is nested where it belongs.

    - Inside an active run (a step of `baseline`, of a pipeline, of a tuning trial): a nested run
      of it, in its experiment.
    - Under `mlflow run` (MLFLOW_RUN_ID set): that run, in the experiment `mlflow run` chose;
      MLflow's start_run takes the id from the environment once, so a job that runs several
      steps opens one run itself (run_baseline) and nests the steps in it.
    - Otherwise a new top-level run in `experiment`.

    An exception inside marks the run FAILED (KILLED for an interrupt: Ctrl-C, or SIGTERM at a
    checkpoint (stopping.py), and for errors.Stopped: a pruned trial), tags it with the reason (`medrobust.error`) and propagates, so
    nothing after the failure, registration included, happens; a version it registered before
    the failure is deleted. Before a top-level run starts, the store is recovered from killed
    processes (recover_store).
    """
    stopping.checkpoint()  # SIGTERM before a step opened its run: no run is made
    configure()
    parent = mlflow.active_run()
    if parent is None:
        recover_store()
    if parent is not None:
        context = mlflow.start_run(run_name=run_name, nested=True, experiment_id=parent.info.experiment_id, tags=tags)
    elif os.environ.get("MLFLOW_RUN_ID"):
        context = mlflow.start_run()
    else:
        context = mlflow.start_run(experiment_id=experiment_id(experiment), run_name=run_name, tags=tags)
    with context as active:
        try:
            yield _started(active, parent, tags, run_name)
        except BaseException as e:
            # The reason stays on the FAILED (or KILLED) run: the UI shows why it stopped.
            mlflow.set_tag("medrobust.error", f"{type(e).__name__}: {e}"[:5000])
            try:  # a version it registered goes with it; a failure here never hides `e`
                registry.delete_versions_of_runs([active.info.run_id], reason=f"its run {active.info.run_id} stopped")
            except Exception as cleanup:  # noqa: BLE001 - the next command deletes it (recover_store)
                log.warning("run %s: its versions are left for the next command to delete (%s)",
                            active.info.run_id, cleanup)
            if isinstance(e, (KeyboardInterrupt, Stopped)):
                mlflow.end_run("KILLED")
            raise


def _started(active, parent, tags, run_name):
    """Tags a run just started or resumed (with the host and process behind it, so a later
    command can tell a run whose process was killed from a live one); returns its id."""
    if parent is None and tags:
        mlflow.set_tags(tags)  # a resumed run (mlflow run) takes no tags at start
    if parent is None and run_name and active.info.run_name != run_name:
        mlflow.set_tag("mlflow.runName", run_name)
    mlflow.set_tags(this_process())
    return active.info.run_id


def recover_store() -> None:
    """Undo what killed processes left half-done, before a command starts its own run: runs
    left RUNNING (fail_orphaned_runs), versions registered by runs that did not finish, and a
    promotion cut between its alias moves (registry.recover_promotions)."""
    for recover in (fail_orphaned_runs, registry.delete_unfinished_versions, registry.recover_promotions):
        try:
            recover()
        except Exception as e:  # noqa: BLE001 - what cannot be recovered now is tried by the next command
            log.warning("could not %s: %s", recover.__name__.replace("_", " "), e)


def fail_orphaned_runs() -> list[str]:
    """Mark FAILED every RUNNING run of this host whose process is gone (kill -9, a lost
    machine): without it the UI would show them as live for ever. Returns their ids.
    A run of another host is left alone: its process cannot be checked from here."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    host = this_process()[HOST_TAG]
    found = client.search_runs(experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                               max_results=1000)
    orphans = []
    for r in found:
        if PID_TAG in r.data.tags and gone(r.data.tags, ttl_s=float("inf")):
            pid = r.data.tags[PID_TAG]
            client.set_tag(r.info.run_id, "medrobust.error", f"process {pid} on {host} ended without closing the run")
            client.set_terminated(r.info.run_id, "FAILED")
            log.warning("run %s (%s) was RUNNING but its process %s on %s is gone: marked FAILED", r.info.run_id,
                        r.info.run_name, pid, host)
            orphans.append(r.info.run_id)
    return orphans


def log_dataset(data: "Dataset", context: str) -> None:
    """Record a Dataset (data.load_dataset) as the run's input: its source and fingerprint,
    so the MLflow UI's dataset column and `dataset.digest` searches work. The digest is the
    fingerprint's first 32 hex digits (MLflow's column holds 36 characters); the whole
    fingerprint is the `data.fingerprint` parameter."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches several equivalent source types
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(data.source))
    name = f"{Path(data.source).name} ({data.layout})"
    mlflow.log_input(MetaDataset(source, name=name, digest=data.fingerprint[:32]), context=context)
    log_params({"data.fingerprint": data.fingerprint})


def _param_text(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def params_match(logged: Mapping[str, str], params: Mapping[str, object]) -> bool:
    """Whether a run's logged parameters hold every one of `params` ({name: value}) as
    log_params would have written it."""
    return all(logged.get(k) == _param_text(v) for k, v in params.items())


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


def log_params(params: Mapping[str, object]) -> None:
    """Log a flat {name: value} dict (None as 'none', booleans as 'true'/'false', like the CLI).

    Keys that `mlflow run` already logged from the entry point's parameters are left as they
    are: MLflow refuses to change a logged parameter, and they hold the same setting.
    """
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: _param_text(v) for k, v in params.items() if k not in logged})


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)


def set_tags(tags: Mapping[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def tag_run(run_id: str, tags: Mapping[str, object]) -> None:
    """Set tags on a run by id (finished or not), all in one request: a kill cannot leave some."""
    configure()
    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_json(obj: dict[str, Any] | list[Any], path: str) -> None:
    mlflow.log_dict(obj, path)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_figure(figure: "Figure", path: str) -> None:
    mlflow.log_figure(figure, path)


def log_bytes(data: bytes, path: str) -> None:
    """Log raw bytes (a PNG made elsewhere) as artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(bytes(data))
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent) if Path(path).parent != Path(".") else None)


def log_array(array: np.ndarray, path: str) -> None:
    """Save an array as .npy and log it as artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        np.save(local, array)
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent) if Path(path).parent != Path(".") else None)
