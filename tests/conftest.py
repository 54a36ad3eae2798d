import atexit
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from stores import STORE, empty_store, image_cache, made_once, start_empty

REPO = Path(__file__).resolve().parents[1]


# Each pytest-xdist worker runs TensorFlow, OpenMP and BLAS on its share of the cores (read when
# they start, so here, before any test imports them). The longest modules first (below) put the
# heaviest side by side, and with every library's default, as many threads as cores in each
# worker, they spun waiting on each other's threads: the inner loop took 592 s of CPU and 5 min
# 41 s that way, 479 s and 4 min 33 s this way. Setting only TensorFlow's pools from Python gave
# back 569 s. A system test's child process (`mlflow run`, a server) is a whole program and gets the
# user's settings back (subprocess_env).
USER_THREADS = {name: os.environ.get(name) for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                                         "OMP_NUM_THREADS")}
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _name in USER_THREADS:
        os.environ.setdefault(_name, str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))


# A pytest-xdist worker has sent its last report when the interpreter starts to exit; tearing down
# what its tests left (every traced TensorFlow function of every network) then took it seconds
# the controller waited for (the last worker's exit: 4.5 s against 1.3 s on three unit modules).
# Registered here, before any test imports MLflow or TensorFlow, so their exit handlers run
# before it (atexit runs the last registered first); logging's, registered earlier, is called in it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    def _exit_without_teardown():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    atexit.register(_exit_without_teardown)


# Read once, before any test changes folder: a relative MEDROBUST_DATA (as a user types it)
# must mean the same folder in every test and child process.
if os.environ.get("MEDROBUST_DATA"):
    os.environ["MEDROBUST_DATA"] = str(Path(os.environ["MEDROBUST_DATA"]).absolute())


# tests/unit/: one module at a time, on synthetic arrays or a few real images; tests/steps/: each
# step end to end on real HAM10000 subsets, in-process; tests/system/: real services and whole
# processes (PostgreSQL, `mlflow server` and `mlflow models serve`, Chromium, a notebook kernel,
# `mlflow run` of each entry point, killed runs), marked `system`, so `pytest -m "not system"`
# leaves them out; `make test` runs everything.
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent.name == "system":
            item.add_marker(pytest.mark.system)
    seconds = _module_seconds(config)  # the longest modules first; one not timed yet may be long too
    items.sort(key=lambda item: -seconds.get(_module(item.nodeid), float("inf")))


# pytest-xdist (--dist loadscope) hands each worker a whole module at a time, in collection order:
# the longest first, so that the short ones fill in at the end. By xdist's own order (most tests
# first) one worker finished a long module alone for the last 34 s of the inner loop, which took
# 5 min 13 s against 4 min 33 s this way. A module's seconds: its last run's, kept in pytest's cache
# by ModuleClock, else MODULE_SECONDS_FILE's (measured on a 2-core machine), else unknown, and first.
MODULE_SECONDS = "medrobust/module-seconds"
MODULE_SECONDS_FILE = Path(__file__).with_name("module_seconds.json")


def _module(nodeid):
    return nodeid.split("::")[0]


def _module_seconds(config):
    measured = config.cache.get(MODULE_SECONDS, {}) if getattr(config, "cache", None) else {}
    return json.loads(MODULE_SECONDS_FILE.read_text()) | measured


def pytest_configure(config):
    config.option.loadscopereorder = False  # keep the collection order above
    if getattr(config, "cache", None) is not None and not hasattr(config, "workerinput"):
        config.pluginmanager.register(ModuleClock(config))  # the controller sees every worker's reports


class ModuleClock:
    """Adds up each module's seconds (setup, call and teardown of its tests) into the cache."""

    def __init__(self, config):
        self.config, self.ran = config, {}

    def pytest_runtest_logreport(self, report):
        self.ran[_module(report.nodeid)] = self.ran.get(_module(report.nodeid), 0.0) + report.duration

    def pytest_sessionfinish(self):
        if self.ran:
            measured = self.config.cache.get(MODULE_SECONDS, {})
            self.config.cache.set(MODULE_SECONDS, measured | {name: round(seconds, 1) for name, seconds in self.ran.items()})


def ham10000_dir():
    return Path(os.environ.get("MEDROBUST_DATA") or REPO.parent / "shared" / "data" / "ham10000")


@pytest.fixture(scope="session")
def ham_dir():
    """The real HAM10000 folder; its absence is a failure, never a silent skip."""
    path = ham10000_dir()
    if not (path / "HAM10000_metadata.csv").exists():
        pytest.fail(f"real HAM10000 not found at {path}; set MEDROBUST_DATA")
    return path


@pytest.fixture(scope="session")
def ham_metadata(ham_dir):
    return pd.read_csv(ham_dir / "HAM10000_metadata.csv")


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch, tmp_path_factory):
    """Each test tracks into its own SQLite store (a copy of an empty one, made once per worker);
    decoded images share one session cache."""
    start_empty(empty_store(tmp_path_factory), tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / STORE}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MEDROBUST_CACHE", str(image_cache(tmp_path_factory)))
    monkeypatch.chdir(tmp_path)
    # In-process MLflow keeps the last store it was pointed at, ahead of the environment: a test
    # calling MLflow before any medrobust step would otherwise use the previous test's store.
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / STORE}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / STORE}")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)  # exported by set_registry_uri; set, it would pin the registry
    yield
    # MLflow sets these in-process (set_registry_uri, a step's configure(), a run): they point into
    # this test's store; monkeypatch then puts back whatever was set before the test.
    for leaked in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(leaked, None)


SMALL_STORE_STEPS = """\
train:
  step: train
  with: {epochs: 1, alias: none}
defend:
  step: defend
  with: {model_uri: "${train}", defense: llt, eval_attacks: [fgsm], alias: none}
evaluate:
  step: evaluate
  grid: {model_uri: ["${train}", "${defend}"]}
  with: {suites: [thesis], n_resamples: 50}
report:
  step: report
  with: {runs: "${evaluate}"}
"""


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, ham_dir):
    """(tracking URI, PipelineResult) of a store one small pipeline made in experiment 'small'
    (a network, its llt defense, both evaluated, the recap): made once for the tests that read
    a pipeline's store (the notebook, the browser). A test that uses it points
    MLFLOW_TRACKING_URI at it; what it adds stays for the next."""
    from medrobust.config import PipelineConfig
    from medrobust.steps.pipeline import run_pipeline
    from small_pipeline import write_pipeline

    def make(folder):
        path = write_pipeline(folder, SMALL_STORE_STEPS, data=ham_dir, name="small.yaml")
        return run_pipeline(PipelineConfig(file=str(path), experiment="small"))

    store, result = made_once(tmp_path_factory, make)
    return f"sqlite:///{store}", result


@pytest.fixture
def small_ham(tmp_path, ham_metadata, ham_dir):
    """A HAM10000-layout folder with 5 real images of each class (whole lesions), in tmp."""
    parts = []
    for _, group in ham_metadata.groupby("dx", sort=True):
        parts.append(group[group.lesion_id.isin(group.lesion_id.unique()[:4])].head(5))
    rows = pd.concat(parts, ignore_index=True)
    folder = tmp_path / "ham_small"
    (folder / "images").mkdir(parents=True)
    for image_id in rows.image_id:
        shutil.copy(ham_dir / "images" / f"{image_id}.jpg", folder / "images")
    rows.to_csv(folder / "HAM10000_metadata.csv", index=False)
    return folder


def subprocess_env():
    """This test's environment for a child process: its tracking store, the venv's tools on
    PATH, and none of the run ids in-process MLflow leaves behind (a child must choose its own)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, value in USER_THREADS.items():  # this worker's share of the cores, undone
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for inherited in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        env.pop(inherited, None)
    return env


@pytest.fixture
def child_env():
    return subprocess_env


@pytest.fixture
def mlflow_project():
    """run(entry point, {parameter: value}) -> the finished `mlflow run` of this repository,
    with the local environment manager, into the experiment 'e2e' of this test's store."""
    def run(entry, params):
        cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
               "--experiment-name", "e2e"]
        for name, value in params.items():
            cmd += ["-P", f"{name}={value}"]
        return subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    return run
