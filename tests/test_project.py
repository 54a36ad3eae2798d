"""The project files agree with each other, and `mlflow run` works end to end."""

import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, MainConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _pins(lines):
    return dict(re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)$", line.strip()).groups()
                for line in lines if "==" in line)


def test_environment_files_pin_the_same_versions():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    base = _pins(pyproject["project"]["dependencies"])
    python_env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    conda_pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert _pins(python_env["dependencies"]) == base
    assert _pins(conda_pip) == base
    assert python_env["python"] == "3.11" and "python=3.11" in conda["dependencies"]
    assert "tf-keras" not in " ".join(base)


def test_mlproject_defaults_are_the_config_defaults():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    params = project["entry_points"]["train"]["parameters"]
    defaults = {f.name: f.default for f in fields(DataConfig) if f.name != "path"}
    defaults |= {f.name: f.default for f in fields(TrainConfig) if f.name not in ("data", "run_name")}
    defaults["fractions"] = ",".join(str(x) for x in defaults["fractions"])
    for name, spec in params.items():
        if name in defaults:
            expected = defaults[name]
            expected = "none" if expected is None else expected
            assert str(spec["default"]).lower() == str(expected).lower(), name
    main = project["entry_points"]["main"]["parameters"]
    _assert_defaults(main, MainConfig())
    assert main["epochs"]["default"] == str(TrainConfig().epochs)
    _assert_defaults(project["entry_points"]["defend"]["parameters"], DefendConfig())


def _assert_defaults(params, config):
    """Every MLproject parameter named like a field of `config` has that field's default."""
    checked = 0
    for name, spec in params.items():
        if not hasattr(config, name) or name == "data" or "default" not in spec:
            continue
        expected = getattr(config, name)
        text = str(spec["default"])
        if isinstance(expected, tuple):
            assert text == ",".join(expected), name
        elif isinstance(expected, float):
            assert float(text) == pytest.approx(expected), name
        else:
            assert text.lower() == ("none" if expected is None else str(expected).lower()), name
        checked += 1
    assert checked >= 5


def test_mlflow_run_train_end_to_end(ham_dir, mlflow_project):
    done = mlflow_project("train", {"data": ham_dir, "image_size": 32, "per_class_limit": 20, "epochs": 1})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.search_runs("e2e")
    assert [r["status"] for r in runs] == ["FINISHED"]
    run = tracking.get_run(runs[0]["run_id"])
    assert "clean_macro_recall" in run["metrics"]
    assert run["params"]["data.per_class_limit"] == "20"
    assert [v["version"] for v in tracking.model_versions("medrobust-small_cnn")] == [1]


def test_cli_bad_input_is_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "medrobust", "train", "--data", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"{tmp_path / 'missing'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
