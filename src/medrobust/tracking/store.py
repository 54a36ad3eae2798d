"""Where tracking goes: $MLFLOW_TRACKING_URI if set, else `sqlite:///mlflow.db` in the working
folder (the registry needs a database store; a plain ./mlruns folder has none)."""

import fcntl
import functools
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ..errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure() -> None:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    if uri.startswith("sqlite:///"):
        _prepare_sqlite(uri)


def _sqlite_path(uri):
    return Path(uri[len("sqlite:///"):]).resolve()


@functools.lru_cache(maxsize=None)  # once per store and process
def _prepare_sqlite(uri):
    """Check that the SQLite store can be written, then create its schema under a file lock:
    two first commands on a new store would otherwise both create the tables, and the second
    die on `duplicate column name`. The lock file stays beside the database."""
    path = _sqlite_path(uri)
    if not path.parent.is_dir():
        raise ConfigError(f"tracking store {uri}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"tracking store {uri} is read-only for this user: point MLFLOW_TRACKING_URI at a store "
                          "you can write")
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created if missing. On a SQLite store its artifacts go to
    <database folder>/mlartifacts/<experiment id>, beside the database whatever the working
    folder (MLflow's default is ./mlruns of wherever the experiment was first created)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = tracking_uri()
    try:
        if uri.startswith("sqlite:///"):
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            root = _sqlite_path(uri).parent / "mlartifacts"
            return SqlAlchemyStore(uri, root.as_uri()).create_experiment(name)
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)  # created by a process beside this one
        if found is None:
            raise
        return found.experiment_id
