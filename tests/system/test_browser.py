"""A real browser on the MLflow UI: an `mlflow server` on 127.0.0.1 over a small store a
pipeline made (conftest.small_store), opened in headless Chromium; the run names and the
evaluate report's headline must appear in the rendered pages."""

from medrobust import tracking
from medrobust.evaluation.report import headline_text

from browser import ui_pages
from servers import mlflow_server


def test_the_runs_page_and_the_report_render_in_chromium(tmp_path, small_store, child_env, monkeypatch):
    uri, result = small_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    evaluate_run = next(i["run_id"] for i in reversed(result.instances) if i["step"] == "evaluate")
    experiment_id = tracking.get_run(evaluate_run)["experiment_id"]
    headline = tracking.load_json_artifact(evaluate_run, "report/headline.json")
    with mlflow_server(tracking.tracking_uri(), tmp_path / "served", child_env()) as url:
        runs_text, report_text = ui_pages(url, experiment_id, parent_name="pipeline small",
                                          report_run_id=evaluate_run, shots=tmp_path)
    for name in ("pipeline small", "train small_cnn", "defend llt on small_cnn", "evaluate thesis on llt on small_cnn"):
        assert name in runs_text, name
    lines = headline_text(headline)
    assert lines and all(line in report_text for line in lines), (lines, report_text[:2000])
    assert (tmp_path / "mlflow-runs.png").stat().st_size > 10_000
    assert (tmp_path / "mlflow-report.png").stat().st_size > 10_000
