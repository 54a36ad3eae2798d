"""The only module that talks to MLflow: runs, parameters, metrics, artifacts, models, registry.

Tracking goes to $MLFLOW_TRACKING_URI if set, else `sqlite:///mlflow.db` in the working folder
(the registry needs a database store; a plain ./mlruns folder has none).
"""

import contextlib
import fcntl
import functools
import io
import logging
import os
import socket
import tempfile
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import RunTag
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from .errors import ConfigError, ModelError, Stopped

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
HOST_TAG, PID_TAG = "medrobust.host", "medrobust.pid"

log = logging.getLogger(__name__)


def tracking_uri():
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _configure():
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


def _experiment_id(name):
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


@contextmanager
def run(experiment, run_name=None, tags=None):
    """Start a run and yield its id; it is nested where it belongs.

    - Inside an active run (a step of `baseline`, of a pipeline, of a tuning trial): a nested run
      of it, in its experiment.
    - Under `mlflow run` (MLFLOW_RUN_ID set): that run, in the experiment `mlflow run` chose;
      MLflow's start_run takes the id from the environment once, so a job that runs several
      steps opens one run itself (run_baseline) and nests the steps in it.
    - Otherwise a new top-level run in `experiment`.

    An exception inside marks the run FAILED (KILLED for an interrupt: Ctrl-C, or SIGTERM as the
    CLI turns it into one, and for errors.Stopped: a pruned trial), tags it with the reason (`medrobust.error`) and propagates, so
    nothing after the failure, registration included, happens. Before a top-level run starts,
    runs left RUNNING by a killed process of this host are marked FAILED.
    """
    _configure()
    parent = mlflow.active_run()
    if parent is None:
        fail_orphaned_runs()
    if parent is not None:
        context = mlflow.start_run(run_name=run_name, nested=True, experiment_id=parent.info.experiment_id, tags=tags)
    elif os.environ.get("MLFLOW_RUN_ID"):
        context = mlflow.start_run()
    else:
        context = mlflow.start_run(experiment_id=_experiment_id(experiment), run_name=run_name, tags=tags)
    with context as active:
        try:
            yield _started(active, parent, tags, run_name)
        except BaseException as e:
            # The reason stays on the FAILED (or KILLED) run: the UI shows why it stopped.
            mlflow.set_tag("medrobust.error", f"{type(e).__name__}: {e}"[:5000])
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
    mlflow.set_tags({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
    return active.info.run_id


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_orphaned_runs():
    """Mark FAILED every RUNNING run of this host whose process is gone (kill -9, a lost
    machine): without it the UI would show them as live for ever. Returns their ids.
    A run of another host is left alone: its process cannot be checked from here."""
    client = MlflowClient()
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    found = client.search_runs(experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                               max_results=1000)
    orphans = []
    for r in found:
        pid = int(r.data.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            client.set_tag(r.info.run_id, "medrobust.error", f"process {pid} on {host} ended without closing the run")
            client.set_terminated(r.info.run_id, "FAILED")
            log.warning("run %s (%s) was RUNNING but its process %d on %s is gone: marked FAILED", r.info.run_id,
                        r.info.run_name, pid, host)
            orphans.append(r.info.run_id)
    return orphans


def log_dataset(data, context):
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


def params_match(logged, params):
    """Whether a run's logged parameters hold every one of `params` ({name: value}) as
    log_params would have written it."""
    return all(logged.get(k) == _param_text(v) for k, v in params.items())


def active_run_id():
    return mlflow.active_run().info.run_id


def log_params(params):
    """Log a flat {name: value} dict (None as 'none', booleans as 'true'/'false', like the CLI).

    Keys that `mlflow run` already logged from the entry point's parameters are left as they
    are: MLflow refuses to change a logged parameter, and they hold the same setting.
    """
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: _param_text(v) for k, v in params.items() if k not in logged})


def log_metrics(values, step=None):
    mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)


def set_tags(tags):
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def tag_run(run_id, tags):
    """Set tags on a run by id (finished or not), all in one request: a kill cannot leave some."""
    _configure()
    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_json(obj, path):
    mlflow.log_dict(obj, path)


def log_text(text, path):
    mlflow.log_text(text, path)


def log_figure(figure, path):
    mlflow.log_figure(figure, path)


def log_bytes(data, path):
    """Log raw bytes (a PNG made elsewhere) as artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(bytes(data))
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent) if Path(path).parent != Path(".") else None)


def log_array(array, path):
    """Save an array as .npy and log it as artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        np.save(local, array)
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent) if Path(path).parent != Path(".") else None)


def log_keras_model(model, example, name="model"):
    """Log a Keras model in MLflow's Keras flavour with an inferred signature.

    Returns (runs:/<run_id>/<name>, the logged model's models:/m-<id> URI). Both load the same
    model; steps hand on the first (our convention) and register the second, which MLflow 3
    resolves directly.
    """
    signature = infer_signature(example, np.asarray(model(example[:2], training=False)))
    info = mlflow.keras.log_model(model, name=name, signature=signature, pip_requirements=_model_requirements())
    return f"runs:/{mlflow.active_run().info.run_id}/{name}", info.model_uri


def _model_requirements():
    """Pins of what loading the model needs, read from this environment. Given explicitly
    because MLflow's inference reloads the model in a subprocess, ~10 s per logged model."""
    out = []
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "numpy"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def register_model(model_uri, name, tags=None, alias=None):
    """Register `model_uri` as a new version of `name`, tagged with `tags` and, if given,
    pointed to by `alias` (e.g. candidate); returns the version."""
    with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints "Created version ..." itself
        version = mlflow.register_model(model_uri, name)
    log.debug(said.getvalue().strip())
    client = MlflowClient()
    try:
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, version.version, key, str(value))
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except BaseException:
        # Interrupted half-way (a signal, a lost server): no version without its tags and alias.
        client.delete_model_version(name, version.version)
        raise
    return int(version.version)


class DefendedPyfunc(mlflow.pyfunc.PythonModel):
    """A defended classifier as an MLflow pyfunc model: predict takes images (an (N, H, W, 3)
    array in [0, 1]) or a DataFrame with a `path` column of image files, applies the defense
    and returns one row per image (medrobust.predict.predict_frame), with the health call at
    the operating point the defend step stored in it (malignant_at_threshold). A served model reads
    files only below $MEDROBUST_IMAGE_ROOT (or the `image_root` predict parameter); with
    neither, paths are refused."""

    def load_context(self, context):
        from .defenses import load_defended

        self.classifier = load_defended(context.artifacts["defended"])

    def predict(self, context, model_input, params=None):
        from .predict import IMAGE_ROOT_ENV, predict_frame

        root = (params or {}).get("image_root") or os.environ.get(IMAGE_ROOT_ENV) or None
        info = self.classifier.info
        return predict_frame(self.classifier, model_input, info.get("operating_health_map", "clinical"),
                             image_root=root, threshold=info.get("operating_threshold"))


def log_defended_model(classifier, name="model"):
    """Log a DefendedClassifier (network, input transformations, detector) as one pyfunc model.
    Returns (runs:/<run_id>/<name>, the logged model's models:/m-<id> URI)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = classifier.save(Path(tmp) / "defended")
        info = mlflow.pyfunc.log_model(
            name=name, python_model=DefendedPyfunc(), artifacts={"defended": str(folder)},
            pip_requirements=_model_requirements() + _own_requirements(),
            # Our package travels with the model, so the pyfunc loads wherever MLflow does.
            code_paths=[str(Path(__file__).resolve().parent)],
        )
    return f"runs:/{mlflow.active_run().info.run_id}/{name}", info.model_uri


def _own_requirements():
    """What the defended model's code (medrobust, shipped as code) imports beyond TensorFlow."""
    out = []
    for dist in ("adversarial-robustness-toolbox", "pillow", "simplejpeg", "pandas", "scikit-learn", "tqdm"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def load_classifier(model_uri):
    """A DefendedClassifier from any model URI: a plain Keras network (no defense) or a model
    the defend step logged. Raises ModelError naming a URI that does not resolve or holds
    something else."""
    from .defenses import DefendedClassifier

    _configure()
    _check_uri(model_uri)
    try:
        flavors = mlflow.models.get_model_info(model_uri).flavors
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:  # ValueError: an http:// URI MLflow cannot split
        raise _unresolved(model_uri, e) from e
    if "keras" in flavors:
        return DefendedClassifier(load_keras_model(model_uri))
    python_model = flavors.get("python_function", {}).get("python_model")
    if python_model:
        loaded = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        if isinstance(loaded, DefendedPyfunc):
            return loaded.classifier
    raise ModelError(f"model URI {model_uri} is not a medrobust classifier (flavours: {', '.join(flavors)})")


def pyfunc_predict(model_uri, model_input):
    """Predict through MLflow's generic pyfunc loader, as `mlflow models predict` and serving do."""
    _configure()
    return mlflow.pyfunc.load_model(model_uri).predict(model_input)


def load_keras_model(model_uri):
    """Load a Keras model from `runs:/<id>/model`, `models:/<name>/<version>` or `models:/<name>@<alias>`.

    A URI that does not resolve raises ModelError naming it.
    """
    _configure()
    _check_uri(model_uri)
    try:
        return mlflow.keras.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:
        raise _unresolved(model_uri, e) from e


def _check_uri(model_uri):
    if not model_uri:
        raise ModelError("no model URI given (runs:/<run_id>/model or models:/<name>@<alias>)")
    return model_uri


def _unresolved(model_uri, error):
    """The ModelError for a URI that does not resolve; a registry URI with nothing behind it
    says which command makes one."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if str(model_uri).startswith(("http://", "https://")):
        return ModelError(f"model URI {model_uri} does not resolve: MLflow loads no model from a web address; give "
                          "models:/<name>@<alias> with MLFLOW_TRACKING_URI pointing at the tracking server")
    if str(model_uri).startswith("models:/"):
        name = str(model_uri)[len("models:/"):].split("@")[0].split("/")[0]
        if not model_versions(name):
            return ModelError(f"no model registered as {name} in {tracking_uri()} (asked for {model_uri}); "
                              "run train first: `mlflow run . -e train` or `medrobust train`")
        alias = str(model_uri).split("@", 1)[1] if "@" in str(model_uri) else None
        if alias is not None and alias not in model_aliases(name):
            makers = {"baseline": "`make run` or `medrobust train`", "candidate": "`medrobust defend`",
                      "robust": "`medrobust promote`", "previous": "a second `medrobust promote`"}
            return ModelError(f"model URI {model_uri} does not resolve: {name} has no version @{alias} in "
                              f"{tracking_uri()}; {makers.get(alias, 'an alias set on a version')} sets it "
                              f"(versions {', '.join(str(v['version']) for v in model_versions(name))})")
    return ModelError(f"model URI {model_uri} does not resolve: {first}")


def get_run(run_id):
    """{'status', 'params', 'metrics', 'tags', 'artifact_uri', 'experiment_id', 'name', 'seconds'} of a
    run; ConfigError naming an id the tracking store does not hold."""
    _configure()
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


def model_run_params(model_uri):
    """The parameters logged by the run that logged the model at `model_uri` (any model URI)."""
    _configure()
    _check_uri(model_uri)
    try:
        run_id = mlflow.models.get_model_info(model_uri).run_id
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:
        raise _unresolved(model_uri, e) from e
    return get_run(run_id)["params"]


def experiment_name(run_id):
    """The name of the experiment a run is in (one request; get_run does not ask for it)."""
    _configure()
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def list_artifacts(run_id, path=None):
    """Paths of every artifact of a run, recursively."""
    _configure()
    client = MlflowClient()
    out, stack = [], [path]
    while stack:
        for item in client.list_artifacts(run_id, stack.pop()):
            (stack.append(item.path) if item.is_dir else out.append(item.path))
    return sorted(out)


def load_text_artifact(run_id, path):
    """The text of artifact `path` of a run; ModelError if the run has no such artifact."""
    _configure()
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise ModelError(f"run {run_id} has no artifact {path} ({e})") from e


def load_json_artifact(run_id, path):
    _configure()
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def model_versions(name):
    """[{'version', 'run_id', 'tags'}] of a registered model, oldest first; [] if it does not exist."""
    _configure()
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return []
    return sorted(
        ({"version": int(v.version), "run_id": v.run_id, "tags": dict(v.tags)} for v in versions),
        key=lambda v: v["version"],
    )


def registered_version(model_uri):
    """(name, version) of a models:/<name>/<version> or models:/<name>@<alias> URI; None for
    any other URI (runs:/..., a path) or one that names no version."""
    if not str(model_uri).startswith("models:/"):
        return None
    _configure()
    client = MlflowClient()
    rest = str(model_uri)[len("models:/"):]
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return name, int(client.get_model_version_by_alias(name, alias).version)
        name, _, version = rest.partition("/")
        return (name, int(version)) if version.isdigit() else None
    except mlflow.exceptions.MlflowException:
        return None


def pinned_uri(model_uri):
    """models:/<name>/<version> for a models:/<name>@<alias> URI (an alias moves; a record of
    where a model came from must not); any other URI as it is."""
    found = registered_version(model_uri) if "@" in str(model_uri) else None
    return f"models:/{found[0]}/{found[1]}" if found else model_uri


def tag_model_version(model_uri, tags):
    """Set tags on the registered version a models:/ URI points to; returns (name, version) or
    None when the URI names no registered version (nothing is tagged then)."""
    found = registered_version(model_uri)
    if found:
        for key, value in tags.items():
            MlflowClient().set_model_version_tag(found[0], str(found[1]), key, str(value))
    return found


def model_version_tags(model_uri):
    """{tag: value} of the registered version a models:/ URI points to; {} for any other URI."""
    found = registered_version(model_uri)
    if not found:
        return {}
    return dict(MlflowClient().get_model_version(found[0], str(found[1])).tags)


def search_runs(experiment=None):
    """[{'run_id', 'status', 'name', 'experiment', 'parent', 'step'}] of an experiment's runs (of
    every experiment if None), oldest first; parent is the parent run's id or None."""
    _configure()
    client = MlflowClient()
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None and experiment not in experiments.values():
        return []
    ids = [i for i, name in experiments.items() if experiment is None or name == experiment]
    found = client.search_runs(ids, order_by=["attributes.start_time ASC"], max_results=50000)
    return [{"run_id": r.info.run_id, "status": r.info.status, "name": r.info.run_name,
             "experiment": experiments[r.info.experiment_id], "parent": r.data.tags.get("mlflow.parentRunId"),
             "step": r.data.tags.get("medrobust.step")} for r in found]


def set_alias(name, alias, version):
    """Point `alias` of registered model `name` at `version` (moving it from any other)."""
    _configure()
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def finished_runs(experiment, tags, statuses=("FINISHED",)):
    """[{'run_id', 'params', 'metrics', 'tags'}] of the runs of `experiment` that ended in one
    of `statuses` holding every tag of `tags` ({key: value}), newest first; [] for an experiment
    that does not exist."""
    _configure()
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


def model_aliases(name):
    """{alias: version} of a registered model; {} if it does not exist."""
    _configure()
    try:
        model = MlflowClient().get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        return {}
    return {alias: int(version) for alias, version in model.aliases.items()}


def run_inputs(run_id):
    """[{'name', 'digest', 'source', 'context'}] of the datasets a run logged as inputs."""
    _configure()
    inputs = MlflowClient().get_run(run_id).inputs.dataset_inputs
    return [{"name": i.dataset.name, "digest": i.dataset.digest, "source": i.dataset.source,
             "context": next((t.value for t in i.tags if t.key == "mlflow.data.context"), None)} for i in inputs]


def download_artifact(run_id, path, dst):
    """Copy artifact `path` of a run into folder `dst`; returns the local path."""
    _configure()
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))


def metric_history(run_id, key):
    _configure()
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]

