"""Read-only questions to the tracking store: runs, their figures and artifacts."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ..errors import ConfigError, ModelError
from .store import configure, tracking_uri


def get_run(run_id: str) -> dict[str, Any]:
    """{'status', 'params', 'metrics', 'tags', 'artifact_uri', 'experiment_id', 'name', 'seconds'} of a
    run; ConfigError naming an id the tracking store does not hold."""
    configure()
    try:
        r = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise ConfigError(f"no run {run_id!r} in the tracking store {tracking_uri()}") from e
    return {
        "status": r.info.status,
        "params": dict(r.data.params),
        "metrics": dict(r.data.metrics),
        "tags": dict(r.data.tags),
        "artifact_uri": r.info.artifact_uri,
        "experiment_id": r.info.experiment_id,
        "name": r.info.run_name,
        "seconds": (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None,
    }


def experiment_name(run_id: str) -> str:
    """The name of the experiment a run is in (one request; get_run does not ask for it)."""
    configure()
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    """Paths of every artifact of a run, recursively."""
    configure()
    client = MlflowClient()
    out, stack = [], [path]
    while stack:
        for item in client.list_artifacts(run_id, stack.pop()):
            (stack.append(item.path) if item.is_dir else out.append(item.path))
    return sorted(out)


def load_text_artifact(run_id: str, path: str) -> str:
    """The text of artifact `path` of a run; ModelError if the run has no such artifact."""
    configure()
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise ModelError(f"run {run_id} has no artifact {path} ({e})") from e


def load_json_artifact(run_id: str, path: str) -> dict[str, Any]:
    configure()
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def search_runs(experiment: str | None = None) -> list[dict[str, str | None]]:
    """[{'run_id', 'status', 'name', 'experiment', 'parent', 'step'}] of an experiment's runs (of
    every experiment if None), oldest first; parent is the parent run's id or None."""
    configure()
    client = MlflowClient()
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None and experiment not in experiments.values():
        return []
    ids = [i for i, name in experiments.items() if experiment is None or name == experiment]
    found = client.search_runs(ids, order_by=["attributes.start_time ASC"], max_results=50000)
    return [{"run_id": r.info.run_id, "status": r.info.status, "name": r.info.run_name,
             "experiment": experiments[r.info.experiment_id], "parent": r.data.tags.get("mlflow.parentRunId"),
             "step": r.data.tags.get("medrobust.step")} for r in found]


def finished_runs(experiment: str, tags: Mapping[str, str],
                  statuses: Sequence[str] = ("FINISHED",)) -> list[dict[str, Any]]:
    """[{'run_id', 'params', 'metrics', 'tags'}] of the runs of `experiment` that ended in one
    of `statuses` holding every tag of `tags` ({key: value}), newest first; [] for an experiment
    that does not exist."""
    configure()
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = []
    for status in statuses:  # MLflow's filter compares a status with one value, not a list
        query = " and ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + [f"attributes.status = '{status}'"])
        runs += client.search_runs([found.experiment_id], query, max_results=1000)
    runs.sort(key=lambda r: r.info.start_time, reverse=True)
    return [{"run_id": r.info.run_id, "params": dict(r.data.params), "metrics": dict(r.data.metrics),
             "tags": dict(r.data.tags)} for r in runs]


def run_inputs(run_id: str) -> list[dict[str, str | None]]:
    """[{'name', 'digest', 'source', 'context'}] of the datasets a run logged as inputs."""
    configure()
    inputs = MlflowClient().get_run(run_id).inputs.dataset_inputs
    return [{"name": i.dataset.name, "digest": i.dataset.digest, "source": i.dataset.source,
             "context": next((t.value for t in i.tags if t.key == "mlflow.data.context"), None)} for i in inputs]


def download_artifact(run_id: str, path: str, dst: Path | str) -> str:
    """Copy artifact `path` of a run into folder `dst`; returns the local path."""
    configure()
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))


def metric_history(run_id: str, key: str) -> list[float]:
    configure()
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]
