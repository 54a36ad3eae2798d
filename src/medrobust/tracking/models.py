"""Models: logging a Keras network or a defended classifier, and loading either back from any
model URI with an error that says which command makes a missing one."""

import os
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import infer_signature

from ..errors import ModelError
from .queries import get_run
from .registry import model_aliases, model_versions
from .store import configure, tracking_uri


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


class DefendedPyfunc(mlflow.pyfunc.PythonModel):
    """A defended classifier as an MLflow pyfunc model: predict takes images (an (N, H, W, 3)
    array in [0, 1]) or a DataFrame with a `path` column of image files, applies the defense
    and returns one row per image (medrobust.predict.predict_frame), with the health call at
    the operating point the defend step stored in it (malignant_at_threshold). A served model reads
    files only below $MEDROBUST_IMAGE_ROOT (or the `image_root` predict parameter); with
    neither, paths are refused."""

    def load_context(self, context):
        from ..defenses import load_defended

        self.classifier = load_defended(context.artifacts["defended"])

    def predict(self, context, model_input, params=None):
        from ..predict import IMAGE_ROOT_ENV, predict_frame

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
            code_paths=[str(Path(__file__).resolve().parents[1])],
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
    from ..defenses import DefendedClassifier

    configure()
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
    configure()
    return mlflow.pyfunc.load_model(model_uri).predict(model_input)


def load_keras_model(model_uri):
    """Load a Keras model from `runs:/<id>/model`, `models:/<name>/<version>` or `models:/<name>@<alias>`.

    A URI that does not resolve raises ModelError naming it.
    """
    configure()
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


def model_run_id(model_uri):
    """The id of the run that logged the model at `model_uri` (any model URI)."""
    configure()
    _check_uri(model_uri)
    try:
        return mlflow.models.get_model_info(model_uri).run_id
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:
        raise _unresolved(model_uri, e) from e


def model_run_params(model_uri):
    """The parameters logged by the run that logged the model at `model_uri` (any model URI)."""
    return get_run(model_run_id(model_uri))["params"]
