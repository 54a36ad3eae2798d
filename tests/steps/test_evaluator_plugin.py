"""medrobust as an MLflow model evaluator: `mlflow.models.evaluate(..., evaluators=["medrobust"])`
on a version trained on a real HAM10000 subset logs what `medrobust evaluate` logs for the same
images, and refuses bad input naming it."""

import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from medrobust import tracking
from medrobust.config import DataConfig, EvaluateConfig, TrainConfig
from medrobust.evaluation.records import read_records_csv
from medrobust.steps.evaluate import run_evaluate
from medrobust.steps.train import run_train

URI = "models:/medrobust-small_cnn/1"
SUITE = {"suites": ["adaptive", "health", "corruptions"], "corruptions": ["jpeg", "hair"], "severities": [3],
         "pgd_steps": 3, "apgd_steps": 4, "n_resamples": 100}


@pytest.fixture(scope="module")
def measured(ham_dir, tmp_path_factory):
    """A trained version, its `medrobust evaluate` run on 30 test images, and those images' table."""
    import os

    store = tmp_path_factory.mktemp("plugin")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=40, fractions=(0.6, 0.2, 0.2))
    run_train(TrainConfig(data=data, epochs=3, batch_size=32, experiment="test"))
    threshold = float(tracking.model_version_tags(URI)["operating_threshold"])
    result = run_evaluate(EvaluateConfig(model_uri=URI, data=data, max_images=30, threshold=threshold,
                                         experiment="test", **{k: tuple(v) if isinstance(v, list) else v
                                                               for k, v in SUITE.items()}))
    per_image = pd.read_csv(io.StringIO(tracking.load_text_artifact(result.run_id, "report/per_image.csv")))
    frame = pd.DataFrame({"path": [f"images/{i}.jpg" for i in per_image.image_id],
                          "label": [["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"][k] for k in per_image.label]})
    yield store, result, frame, threshold
    os.environ.pop("MLFLOW_TRACKING_URI")
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def store(measured, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{measured[0] / 'mlflow.db'}")


def _plugin(data, config, targets="label"):
    with tracking.run("test", run_name="mlflow.models.evaluate") as run_id:  # the store this test set
        result = mlflow.models.evaluate(URI, data, targets=targets, model_type="classifier", evaluators=["medrobust"],
                                        evaluator_config={"medrobust": config})
    return run_id, result


def test_mlflow_evaluate_with_the_medrobust_evaluator_logs_what_medrobust_evaluate_does(measured, store, ham_dir):
    _, evaluated, frame, threshold = measured
    run_id, result = _plugin(frame, SUITE | {"image_root": str(ham_dir), "threshold": threshold})
    ours = {(r["model"], r["attack"], r["threat"], r["eps"], r["metric"]): r["value"] for r in evaluated.records}
    theirs = {(r["model"], r["attack"], r["threat"], r["eps"], r["metric"]): r["value"]
              for r in read_records_csv(tracking.load_text_artifact(run_id, "report/records.csv"))}
    assert set(theirs) == set(ours) and len(ours) > 100  # every row and figure, corruptions included
    for key, value in ours.items():
        if key[-1] == "seconds":  # wall time
            continue
        assert theirs[key] == pytest.approx(value, nan_ok=True, abs=1e-9), key
    # the EvaluationResult MLflow expects: the headline and flat metrics, and the report's artifacts
    assert result.metrics["worst_accuracy"] == pytest.approx(evaluated.headline["accuracy"]["value"])
    assert result.metrics["clean_fnr"] == pytest.approx(ours[("target", "none", "clean", 0.0, "fnr")])
    assert set(result.artifacts) == {"report", "records", "headline"}
    assert "Natural corruptions" in result.artifacts["report"].content
    logged = tracking.get_run(run_id)
    assert logged["metrics"]["worst_accuracy"] == result.metrics["worst_accuracy"]
    assert any(r["parent"] == run_id for r in tracking.search_runs("test"))  # one nested run per row


def test_an_array_of_flattened_images_is_measured_like_their_files(measured, store, ham_dir):
    _, _, frame, threshold = measured
    from medrobust.predict import read_request

    classifier = tracking.load_classifier(URI)
    x = read_request(classifier, frame.head(12), image_root=str(ham_dir))
    config = {"suites": ["health"], "apgd_steps": 3, "n_resamples": 50, "threshold": threshold}
    _, from_files = _plugin(frame.head(12), config | {"image_root": str(ham_dir)})
    _, from_array = _plugin(x.reshape(12, -1), config, targets=frame.label.head(12).to_numpy())
    figures = {k: v for k, v in from_files.metrics.items() if not k.endswith("_seconds")}  # wall time aside
    assert len(figures) > 50
    assert {k: from_array.metrics[k] for k in figures} == pytest.approx(figures, nan_ok=True)


@pytest.mark.parametrize("change, message", [
    ({"suites": ["strong"]}, "suites must be one of"),
    ({"model_uri": "models:/other/1"}, "evaluator_config takes no model_uri"),
    ({"severity": 3}, "unknown setting severity"),
    ({"image_root": None}, "only below an allowed folder"),
])
def test_bad_config_or_images_are_refused_naming_them(measured, store, ham_dir, change, message, monkeypatch):
    monkeypatch.delenv("MEDROBUST_IMAGE_ROOT", raising=False)
    config = {"suites": ["health"], "apgd_steps": 2, "image_root": str(ham_dir)} | change
    with pytest.raises(MlflowException, match=message):
        _plugin(measured[2].head(4), {k: v for k, v in config.items() if v is not None})


def test_a_path_outside_the_image_root_names_its_row(measured, store, ham_dir):
    frame = measured[2].head(4).copy()
    frame.loc[2, "path"] = "../../../etc/passwd"
    with pytest.raises(MlflowException, match="row 2"):
        _plugin(frame, {"suites": ["health"], "apgd_steps": 2, "image_root": str(ham_dir)})
    assert np.all(frame.label.isin(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]))
