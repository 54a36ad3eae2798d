"""The only module that talks to MLflow: runs, parameters, metrics, artifacts, models, registry.

Tracking goes to $MLFLOW_TRACKING_URI if set, else `sqlite:///mlflow.db` in the working folder
(the registry needs a database store; a plain ./mlruns folder has none).
"""

from importlib import metadata
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri():
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _configure():
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)


@contextmanager
def run(experiment, run_name=None, nested=False, tags=None):
    """Start a run (nested under the active one if `nested`); yields its run id.

    An exception inside marks the run FAILED (MLflow's start_run does this on exit) and
    propagates, so nothing after the failure, registration included, happens.
    """
    _configure()
    # Under `mlflow run` the run already exists (MLFLOW_RUN_ID) in the experiment that
    # `mlflow run --experiment-name` chose; start_run resumes it, and setting another
    # experiment would conflict.
    # A nested run joins its parent's experiment.
    if not nested and not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, nested=nested, tags=tags) as active:
        yield active.info.run_id


def _param_text(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


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


def log_json(obj, path):
    mlflow.log_dict(obj, path)


def log_text(text, path):
    mlflow.log_text(text, path)


def log_figure(figure, path):
    mlflow.log_figure(figure, path)


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
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version.version, key, str(value))
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


class DefendedPyfunc(mlflow.pyfunc.PythonModel):
    """A defended classifier as an MLflow pyfunc model: predict takes images (an (N, H, W, 3)
    array in [0, 1]) or a DataFrame with a `path` column of image files, applies the defense
    and returns one row per image (medrobust.predict.predict_frame)."""

    def load_context(self, context):
        from .defenses import load_defended

        self.classifier = load_defended(context.artifacts["defended"])

    def predict(self, context, model_input, params=None):
        from .predict import predict_frame

        return predict_frame(self.classifier, model_input)


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
    for dist in ("adversarial-robustness-toolbox", "pillow", "pandas", "scikit-learn", "tqdm"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def load_classifier(model_uri):
    """A DefendedClassifier from any model URI: a plain Keras network (no defense) or a model
    the defend step logged. Raises ValueError naming a URI that does not resolve or holds
    something else."""
    from .defenses import DefendedClassifier

    _configure()
    if not model_uri:
        raise ValueError("no model URI given (runs:/<run_id>/model or models:/<name>@<alias>)")
    try:
        flavors = mlflow.models.get_model_info(model_uri).flavors
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise ValueError(f"model URI {model_uri} does not resolve: {str(e).splitlines()[0]}") from e
    if "keras" in flavors:
        return DefendedClassifier(load_keras_model(model_uri))
    python_model = flavors.get("python_function", {}).get("python_model")
    if python_model:
        loaded = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        if isinstance(loaded, DefendedPyfunc):
            return loaded.classifier
    raise ValueError(f"model URI {model_uri} is not a medrobust classifier (flavours: {', '.join(flavors)})")


def pyfunc_predict(model_uri, model_input):
    """Predict through MLflow's generic pyfunc loader, as `mlflow models predict` and serving do."""
    _configure()
    return mlflow.pyfunc.load_model(model_uri).predict(model_input)


def load_keras_model(model_uri):
    """Load a Keras model from `runs:/<id>/model`, `models:/<name>/<version>` or `models:/<name>@<alias>`.

    A URI that does not resolve raises ValueError naming it.
    """
    _configure()
    if not model_uri:
        raise ValueError("no model URI given (runs:/<run_id>/model or models:/<name>@<alias>)")
    try:
        return mlflow.keras.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise ValueError(f"model URI {model_uri} does not resolve to a Keras model: {str(e).splitlines()[0]}") from e


def get_run(run_id):
    """{'status', 'params', 'metrics', 'tags', 'artifact_uri'} of a run."""
    _configure()
    r = MlflowClient().get_run(run_id)
    return {
        "status": r.info.status,
        "params": dict(r.data.params),
        "metrics": dict(r.data.metrics),
        "tags": dict(r.data.tags),
        "artifact_uri": r.info.artifact_uri,
    }


def list_artifacts(run_id, path=None):
    """Paths of every artifact of a run, recursively."""
    _configure()
    client = MlflowClient()
    out, stack = [], [path]
    while stack:
        for item in client.list_artifacts(run_id, stack.pop()):
            (stack.append(item.path) if item.is_dir else out.append(item.path))
    return sorted(out)


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


def search_runs(experiment):
    """[{'run_id', 'status', 'name'}] of an experiment's runs, oldest first."""
    _configure()
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list", order_by=["attributes.start_time ASC"])
    return [{"run_id": r.info.run_id, "status": r.info.status, "name": r.info.run_name} for r in found]


def download_artifact(run_id, path, dst):
    """Copy artifact `path` of a run into folder `dst`; returns the local path."""
    _configure()
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))


def metric_history(run_id, key):
    _configure()
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]

