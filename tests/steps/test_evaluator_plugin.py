"""medrobust as an MLflow model evaluator: `mlflow.models.evaluate(..., evaluators=["medrobust"])`
on a version trained on a real HAM10000 subset logs what `medrobust evaluate` logs for the same
images, and refuses bad input naming it."""

import io

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from medrobust import tracking
from medrobust.config import EvaluateConfig
from medrobust.evaluation.records import read_records_csv
from medrobust.steps.evaluate import run_evaluate

from stores import shared_network

URI = "models:/medrobust-small_cnn/1"  # the network trained once for this module and others, in this test's copy of its store
SUITE = {"suites": ["adaptive", "health", "corruptions"], "corruptions": ["jpeg", "hair"], "severities": [3],
         "pgd_steps": 3, "apgd_steps": 4, "n_resamples": 100}


trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))


@pytest.fixture
def measured(trained):
    """A trained version, its `medrobust evaluate` run on 30 test images, and those images' table
    (in this test's own store, as every test's)."""
    data, _ = trained
    threshold = float(tracking.model_version_tags(URI)["operating_threshold"])
    result = run_evaluate(EvaluateConfig(model_uri=URI, data=data, max_images=30, threshold=threshold,
                                         experiment="test", **{k: tuple(v) if isinstance(v, list) else v
                                                               for k, v in SUITE.items()}))
    per_image = pd.read_csv(io.StringIO(tracking.load_text_artifact(result.run_id, "report/per_image.csv")))
    frame = pd.DataFrame({"path": [f"images/{i}.jpg" for i in per_image.image_id],
                          "label": [["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"][k] for k in per_image.label]})
    return result, frame, threshold


def _plugin(data, config, targets="label"):
    with tracking.run("test", run_name="mlflow.models.evaluate") as run_id:  # the store this test set
        result = mlflow.models.evaluate(URI, data, targets=targets, model_type="classifier", evaluators=["medrobust"],
                                        evaluator_config={"medrobust": config})
    return run_id, result


def test_mlflow_evaluate_with_the_medrobust_evaluator_logs_what_medrobust_evaluate_does(measured, ham_dir, monkeypatch):
    evaluated, frame, threshold = measured
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

    # an array of flattened images is measured like their files
    from medrobust.predict import read_request

    x = read_request(tracking.load_classifier(URI), frame.head(12), image_root=str(ham_dir))
    config = {"suites": ["health"], "apgd_steps": 3, "n_resamples": 50, "threshold": threshold}
    _, from_files = _plugin(frame.head(12), config | {"image_root": str(ham_dir)})
    _, from_array = _plugin(x.reshape(12, -1), config, targets=frame.label.head(12).to_numpy())
    figures = {k: v for k, v in from_files.metrics.items() if not k.endswith("_seconds")}  # wall time aside
    assert len(figures) > 10
    assert {k: from_array.metrics[k] for k in figures} == pytest.approx(figures, nan_ok=True)

    # bad settings or images are refused naming them
    monkeypatch.delenv("MEDROBUST_IMAGE_ROOT", raising=False)
    base = {"suites": ["health"], "apgd_steps": 2, "image_root": str(ham_dir)}
    for change, message in (({"suites": ["strong"]}, "suites must be one of"),
                            ({"model_uri": "models:/other/1"}, "evaluator_config takes no model_uri"),
                            ({"severity": 3}, "unknown setting severity"),
                            ({"threshold": 2}, "threshold must be in"),
                            ({"image_root": None}, "only below an allowed folder")):
        with pytest.raises(MlflowException, match=message):
            _plugin(frame.head(4), {k: v for k, v in (base | change).items() if v is not None})
    outside = frame.head(4).copy()
    outside.loc[2, "path"] = "../../../etc/passwd"
    with pytest.raises(MlflowException, match="row 2"):
        _plugin(outside, base)
    # a flat config meant for MLflow's own evaluator is not ours: skipped, MLflow's default runs alone
    monkeypatch.setenv("MEDROBUST_IMAGE_ROOT", str(ham_dir))  # the pyfunc MLflow's evaluator calls reads paths
    with tracking.run("test", run_name="default only"):
        plain = mlflow.models.evaluate(URI, frame.head(8), targets="label", model_type="classifier",
                                       model_config={"output": "predicted"},
                                       evaluator_config={"log_model_explainability": False})
    assert "accuracy_score" in plain.metrics and "worst_accuracy" not in plain.metrics
