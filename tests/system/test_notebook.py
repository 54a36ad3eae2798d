"""notebooks/compare_runs.ipynb, executed end to end (nbclient) against a small store: a pipeline's
(a network, its llt defense, both evaluated, the recap: conftest.small_store) and a
multi-objective study added here."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from medrobust.config import DataConfig, TuneConfig
from medrobust.steps.tune import run_tune

REPO = Path(__file__).resolve().parents[2]


def _text(cell):
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        out.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def test_compare_runs_notebook_executes_on_a_small_store(tmp_path, ham_dir, small_store, monkeypatch):
    uri, pipeline = small_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model_uri = pipeline.instances[0]["output"]
    study = run_tune(TuneConfig(objective="defense", defense="retrain", model_uri=model_uri, multi_objective=True,
                                n_trials=2, max_rounds=1, suites=("thesis",), max_images=20, experiment="small",
                                data=DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)))
    monkeypatch.setenv("MEDROBUST_EXPERIMENT", "small")
    notebook = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(o.get("output_type") != "error" for c in code for o in c.get("outputs", []))
    assert "experiment 'small'" in _text(code[0])
    table = _text(code[1])
    assert f"report run {pipeline.instances[-1]['run_id']}" in table
    assert "FNR (cancers called benign)" in table and "undefended" in table and "llt" in table
    assert "recap curves over 2 models: undefended, llt" in _text(code[2])
    assert sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for o in code[2]["outputs"]) >= 1
    complete = [t for t in study.trials if t["state"] == "COMPLETE"]
    assert f"of {len(complete)} completed trials" in _text(code[3])
    assert any("image/png" in o.get("data", {}) for o in code[3]["outputs"])
