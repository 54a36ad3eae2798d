"""Models: every version logged as one pyfunc contract (a network with its defense, if any),
and loaded back from any model URI with an error that says which command makes a missing one."""

import functools
import logging
import os
import random
import tempfile
from copy import deepcopy
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, Schema

from ..errors import ModelError
from .queries import get_run
from .registry import model_aliases, model_versions
from .store import configure, tracking_uri

if TYPE_CHECKING:
    import keras

    from ..defenses import DefendedClassifier

log = logging.getLogger(__name__)


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


def serving_signature() -> ModelSignature:
    """The one signature of every version: a `path` or an `image` column in, RESPONSE_COLUMNS out."""
    from ..predict import RESPONSE_COLUMNS

    inputs = Schema([ColSpec(DataType.string, "path", required=False),
                     ColSpec(DataType.string, "image", required=False)])
    kinds = {"predicted": DataType.string, "malignant_at_threshold": DataType.boolean, "rejected": DataType.boolean}
    outputs = Schema([ColSpec(kinds.get(c, DataType.double), c) for c in RESPONSE_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """Every registered version (trained, poisoned, defended, distilled, with or without a
    detector) as one MLflow pyfunc model with one contract (docs/serving.md): a DataFrame with
    a `path` column of image files or an `image` column of base64 image bytes in, any image
    size; one row per image out (medrobust.predict.RESPONSE_COLUMNS), the health call at the
    version's own operating threshold. A served model reads files only below
    $MEDROBUST_IMAGE_ROOT (never a folder the request names); with none set, paths are refused.
    A bad request raises MlflowException(INVALID_PARAMETER_VALUE): an HTTP 400 naming the row."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from ..defenses import load_defended
        from ..predict import RESPONSE_COLUMNS

        self.classifier = load_defended(context.artifacts["defended"])
        # model_config {"output": <column>}: that column alone, for a client that takes one
        # (mlflow.models.evaluate's classifier evaluator: model_config={"output": "predicted"}).
        self.output = (context.model_config or {}).get("output", "table")
        if self.output not in ("table", *RESPONSE_COLUMNS):
            raise MlflowException(f"model_config output must be 'table' or one of the columns "
                                  f"{', '.join(RESPONSE_COLUMNS)}, got {self.output!r}", error_code=INVALID_PARAMETER_VALUE)

    # No type hints here: MLflow reads predict's hints to validate and convert what is served,
    # which would change the serving contract (docs/serving.md).
    def predict(self, context, model_input, params=None):
        from ..errors import DataError
        from ..predict import IMAGE_ROOT_ENV, predict_frame

        info = self.classifier.info
        if not isinstance(model_input, pd.DataFrame):
            raise MlflowException("send a table with a 'path' or an 'image' column (dataframe_split or "
                                  f"dataframe_records), got {type(model_input).__name__}",
                                  error_code=INVALID_PARAMETER_VALUE)
        try:
            frame = predict_frame(self.classifier, model_input, info.get("operating_health_map", "clinical"),
                                  image_root=os.environ.get(IMAGE_ROOT_ENV) or None,
                                  threshold=info.get("operating_threshold"))
        except DataError as e:  # the request's fault: 400, naming the row
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as e:  # ours: 500, the traceback in the server's log and not in the answer
            log.exception("prediction failed")
            raise MlflowException(f"the model failed on this request ({type(e).__name__}); see the server's log",
                                  error_code=INTERNAL_ERROR) from None
        return frame if self.output == "table" else frame[self.output]


DefendedPyfunc = ClassifierPyfunc  # the name defended versions logged before every version was one were pickled with


def log_classifier(classifier: "DefendedClassifier", name: str = "model") -> tuple[str, str]:
    """Log a DefendedClassifier (network, input transformations, detector, operating point in
    its info; a trained network is one with no transformations) as the one pyfunc model every
    version is, with its signature. The Keras network travels inside it, for attacks and
    transfer (load_classifier). Returns (runs:/<run_id>/<name>, the logged model's models:/m-<id> URI).
    A classifier without an operating threshold is refused: the contract's call needs one."""
    if "operating_threshold" not in classifier.info:
        raise ModelError("a version must carry its operating threshold (info['operating_threshold']) to serve the "
                         "contract's malignant_at_threshold; train and defend choose it on the validation split")
    with tempfile.TemporaryDirectory() as tmp:
        folder = classifier.save(Path(tmp) / "defended")
        info = mlflow.pyfunc.log_model(
            name=name, python_model=ClassifierPyfunc(), artifacts={"defended": str(folder)},
            signature=serving_signature(), model_config={"output": "table"},
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


def load_classifier(model_uri: str) -> "DefendedClassifier":
    """A DefendedClassifier from any model URI: a version logged by log_classifier (its saved
    parts, read without running the pyfunc), or a plain Keras network an earlier version of
    medrobust logged. Raises ModelError naming a URI that does not resolve or holds something else.
    A version read again in the same process shares its network and detector with the earlier
    reads (the settings are each caller's own): copy a network before training it
    (steps.defend.copy_network)."""
    from ..defenses import DefendedClassifier

    configure()
    _check_uri(model_uri)
    try:
        info = _mlmodel(model_uri)
        flavors = info.flavors
        if "keras" in flavors:
            return DefendedClassifier(mlflow.keras.load_model(model_uri))
        parts = flavors.get("python_function", {}).get("artifacts", {}).get("defended", {}).get("path")
        if parts:
            # Only the saved parts: the whole model folder also holds medrobust's source, shipped
            # for serving (about 100 files, 5 times the time). A logged model's own location, as
            # models:/m-<id> takes no sub-path.
            if not info.model_id:
                return _read_defended(f"{model_uri.rstrip('/')}/{parts}")
            location = mlflow.get_logged_model(info.model_id).artifact_location
            return _own_settings(_read_logged(f"{location.rstrip('/')}/{parts}"))
    except ModelError:
        raise
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:  # ValueError: an http:// URI MLflow cannot split
        raise _unresolved(model_uri, e) from e
    raise ModelError(f"model URI {model_uri} is not a medrobust classifier (flavours: {', '.join(flavors)})")


def _read_defended(artifact_uri: str) -> "DefendedClassifier":
    from ..defenses import load_defended

    # Building a Dropout layer draws a seed from Python's random: a read leaves it as it was, so
    # that what follows does not depend on whether a version was read or found in _read_logged.
    state = random.getstate()
    try:
        with tempfile.TemporaryDirectory() as tmp:  # every part is read into memory before it goes
            return load_defended(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp))
    finally:
        random.setstate(state)


# A logged model's files never change (its location holds its random id; a copy of a store
# shares them), so the last few read are kept with their Keras networks and the steps compiled
# for them (models/tracing.py: the forward pass, and an undefended network's attack steps; a
# defended model's attack wrapper, as_keras, is built anew): each step of a pipeline, a baseline
# or a tune study read and traced its input model anew (the step tests: 69 of 101 loads were of
# a model the process had read; 17 s of their 336 s of CPU). Nothing trains or compiles a loaded
# network (defend trains a copy); each caller gets its own settings (_own_settings). A version
# logged without a model id (MLflow 2) is read every time: its run's folder can be written again.
_read_logged = functools.lru_cache(maxsize=4)(_read_defended)


def _own_settings(classifier: "DefendedClassifier") -> "DefendedClassifier":
    return replace(classifier, chain=deepcopy(classifier.chain), info=deepcopy(classifier.info),
                   smoothing=deepcopy(classifier.smoothing))


def serves_contract(model_uri: str) -> bool:
    """Whether the model at model_uri serves the one contract (its signature is
    serving_signature()): every version log_classifier logged, none logged before it."""
    configure()
    _check_uri(model_uri)
    try:
        signature = _mlmodel(model_uri).signature
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:
        raise _unresolved(model_uri, e) from e
    return signature is not None and signature.to_dict() == serving_signature().to_dict()


def pyfunc_predict(model_uri: str, model_input: pd.DataFrame) -> pd.DataFrame | pd.Series:
    """Predict through MLflow's generic pyfunc loader, as `mlflow models predict` and serving do."""
    configure()
    return mlflow.pyfunc.load_model(model_uri).predict(model_input)


def load_keras_model(model_uri: str) -> "keras.Model":
    """The Keras network of the model at `model_uri` (without its input transformations), for
    attacks, transfer and benchmarks, shared as load_classifier says: copy it before training
    it. A URI that does not resolve raises ModelError naming it."""
    return load_classifier(model_uri).network


def _mlmodel(model_uri: str) -> mlflow.models.Model:
    """The MLmodel file of the model at `model_uri`, read through a folder of ours:
    Model.load and get_model_info download it into a temporary folder they never remove (one
    left in /tmp per call: about 100 after one run of the inner test loop)."""
    root = model_uri.rstrip("/")
    if urlparse(root).scheme in ("", "file"):  # a folder: read where it lies, nothing downloaded
        return mlflow.models.Model.load(root)
    logged = root[len("models:/"):] if root.startswith("models:/") else ""
    if logged and "/" not in logged and "@" not in logged:  # models:/<model id>, as MLflow tells it from a name
        root = mlflow.get_logged_model(logged).artifact_location
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.models.Model.load(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp))


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


def model_run_id(model_uri: str) -> str | None:
    """The id of the run that logged the model at `model_uri` (any model URI)."""
    configure()
    _check_uri(model_uri)
    try:
        return _mlmodel(model_uri).run_id
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as e:
        raise _unresolved(model_uri, e) from e


def model_run_params(model_uri: str) -> dict[str, str]:
    """The parameters logged by the run that logged the model at `model_uri` (any model URI)."""
    return get_run(model_run_id(model_uri))["params"]
