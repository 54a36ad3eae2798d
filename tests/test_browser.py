"""A real browser on the MLflow UI: an `mlflow server` on 127.0.0.1 over a small store a
pipeline made, opened in headless Chromium; the run names and the evaluate report's headline
must appear in the rendered pages."""

from medrobust import tracking
from medrobust.config import PipelineConfig
from medrobust.evaluation.report import headline_text
from medrobust.steps.pipeline import run_pipeline

from browser import ui_pages
from servers import mlflow_server
from small_pipeline import write_pipeline

STEPS = """\
train:
  step: train
  with: {epochs: 1, alias: none}
evaluate:
  step: evaluate
  with: {model_uri: "${train}", suites: [thesis], n_resamples: 50}
"""


def test_the_runs_page_and_the_report_render_in_chromium(tmp_path, ham_dir, child_env):
    path = write_pipeline(tmp_path, STEPS, data=ham_dir, name="ui.yaml")
    result = run_pipeline(PipelineConfig(file=str(path), experiment="ui"))
    evaluate_run = result.instances[-1]["run_id"]
    experiment_id = tracking.get_run(evaluate_run)["experiment_id"]
    headline = tracking.load_json_artifact(evaluate_run, "report/headline.json")
    with mlflow_server(tracking.tracking_uri(), tmp_path / "served", child_env()) as url:
        runs_text, report_text = ui_pages(url, experiment_id, parent_name="pipeline ui",
                                          report_run_id=evaluate_run, shots=tmp_path)
    for name in ("pipeline ui", "train small_cnn", "evaluate thesis on small_cnn"):
        assert name in runs_text, name
    lines = headline_text(headline)
    assert lines and all(line in report_text for line in lines), (lines, report_text[:2000])
    assert (tmp_path / "mlflow-runs.png").stat().st_size > 10_000
    assert (tmp_path / "mlflow-report.png").stat().st_size > 10_000
