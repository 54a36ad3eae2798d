"""What happens when things go wrong: each fault stops with one clear line, nothing wrong is
registered, no run stays RUNNING, nothing is read unchecked (README, "What happens when
things go wrong")."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from medrobust import tracking
from medrobust.config import AttackConfig, DataConfig, PoisonConfig, TrainConfig
from medrobust.data import load_dataset
from medrobust.data.sources import open_source
from medrobust.defenses import DefendedClassifier
from medrobust.errors import ConfigError, DataError, ModelError, TrainingError
from medrobust.models import create_model
from medrobust.predict import predict_frame
from medrobust.steps.poison import run_poison
from medrobust.steps.train import run_train


def _medrobust(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "medrobust", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_diverged_training_is_failed_and_registers_nothing(small_ham):
    config = TrainConfig(data=DataConfig(path=str(small_ham), image_size=16), epochs=2, learning_rate=1e12,
                         patience=0, experiment="test")
    with pytest.raises(TrainingError, match=r"training diverged at train epoch \d: .*lower the learning rate"):
        run_train(config)
    [run] = tracking.search_runs("test")
    assert run["status"] == "FAILED"
    assert "training diverged at train epoch" in tracking.get_run(run["run_id"])["tags"]["medrobust.error"]
    assert tracking.model_versions("medrobust-small_cnn") == []


def test_a_network_with_non_finite_weights_gives_no_predictions():
    from medrobust.models.training import predict_logits

    model = create_model("small_cnn", (16, 16, 3), 7)
    model.get_layer("logits").kernel.assign(np.full(model.get_layer("logits").kernel.shape, np.nan, np.float32))
    with pytest.raises(TrainingError, match="outputs non-finite logits for 4 of 4 images"):
        predict_logits(model, np.zeros((4, 16, 16, 3), np.float32))


def _wait_for(predicate, seconds=240, every=0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _running_with_an_epoch():
    for run in tracking.search_runs("faults"):
        if run["status"] == "RUNNING" and tracking.metric_history(run["run_id"], "train_loss"):
            return run
    return None


LONG_TRAINING = ["train", "--image-size", "16", "--epochs", "400", "--patience", "0", "--batch-size", "8",
                 "--experiment", "faults"]


def test_sigterm_ends_the_run_killed_and_registers_nothing(small_ham, child_env):
    child = _medrobust([*LONG_TRAINING, "--data", str(small_ham)], child_env())
    try:
        run = _wait_for(_running_with_an_epoch)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 143, stderr
    assert "stopped (SIGTERM); its runs are marked KILLED" in stderr and "Traceback" not in stderr
    assert tracking.get_run(run["run_id"])["status"] == "KILLED"
    assert tracking.model_versions("medrobust-small_cnn") == []


def test_a_registration_cut_half_way_leaves_no_version(small_ham, monkeypatch):
    from mlflow.tracking import MlflowClient

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C, or a lost connection's exception

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", interrupted)  # between version and alias
    with pytest.raises(KeyboardInterrupt):
        run_train(TrainConfig(data=DataConfig(path=str(small_ham), image_size=16), epochs=1, experiment="test"))
    assert tracking.model_versions("medrobust-small_cnn") == []
    assert [r["status"] for r in tracking.search_runs("test")] == ["KILLED"]


def test_after_kill_9_the_next_command_marks_the_orphan_failed(small_ham, child_env, caplog):
    child = _medrobust([*LONG_TRAINING, "--data", str(small_ham)], child_env())
    try:
        run = _wait_for(_running_with_an_epoch)
        child.kill()  # SIGKILL: no handler runs, the run stays RUNNING
        child.communicate(timeout=60)
    finally:
        child.kill()
    run_info = tracking.get_run(run["run_id"])
    assert run_info["status"] == "RUNNING" and run_info["tags"]["medrobust.pid"] == str(child.pid)
    with tracking.run("other", run_name="next command"):  # any later command against the store
        pass
    after = tracking.get_run(run["run_id"])
    assert after["status"] == "FAILED"
    assert f"process {child.pid}" in after["tags"]["medrobust.error"]
    assert "is gone: marked FAILED" in caplog.text


def test_two_first_commands_on_a_new_store_both_succeed(tmp_path, child_env, monkeypatch):
    """Both create the schema at once; the lock beside the database serialises them."""
    env = child_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"}
    (tmp_path / "new").mkdir()
    code = ("from medrobust import tracking\n"
            "with tracking.run('race', run_name='r'):\n    tracking.log_metrics({'a': 1})\n")
    children = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    errors = [c.communicate(timeout=300)[1] for c in children]
    assert [c.returncode for c in children] == [0, 0, 0], errors
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    assert [r["status"] for r in tracking.search_runs("race")] == ["FINISHED"] * 3


def test_a_read_only_store_is_one_line_at_once(tmp_path, child_env):
    store = tmp_path / "store"
    store.mkdir()
    env = child_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-c", "from medrobust import tracking\nwith tracking.run('x'): pass"], env=env,
                   check=True, capture_output=True, timeout=300)
    # The store's folder mounted read-only in a private mount namespace, as on a read-only volume.
    command = (f"mount --bind -o ro {store} {store} && exec {sys.executable} -m medrobust attack "
               f"--data {tmp_path / 'nowhere'}")
    started = time.monotonic()
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "is read-only for this user" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries


def test_artifacts_go_beside_the_sqlite_file(tmp_path, monkeypatch):
    (tmp_path / "db").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with tracking.run("beside") as run_id:
        tracking.log_text("x", "a.txt")
    uri = tracking.get_run(run_id)["artifact_uri"]
    assert uri.startswith(f"file://{tmp_path / 'db' / 'mlartifacts'}/")
    assert (tmp_path / "db" / "mlartifacts").is_dir() and list((tmp_path / "elsewhere").iterdir()) == []


def test_served_model_reads_only_below_its_image_root(small_ham, tmp_path):
    classifier = DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7))
    inside = sorted((small_ham / "images").glob("*.jpg"))[:2]
    frame = pd.DataFrame({"path": [str(p) for p in inside]})
    with pytest.raises(DataError, match="reads image files only below an allowed folder; set MEDROBUST_IMAGE_ROOT"):
        predict_frame(classifier, frame, image_root=None)
    assert len(predict_frame(classifier, frame, image_root=str(small_ham))) == 2
    (tmp_path / "secret.jpg").write_bytes(inside[0].read_bytes())
    escape = str(small_ham / ".." / "secret.jpg")
    with pytest.raises(DataError, match="row 0: the path is outside the allowed folder"):
        predict_frame(classifier, pd.DataFrame({"path": [escape]}), image_root=str(small_ham))
    (small_ham / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(DataError, match="row 0: the path is outside"):
        predict_frame(classifier, pd.DataFrame({"path": [str(small_ham / "link.jpg")]}), image_root=str(small_ham))
    (small_ham / "unreadable.jpg").write_bytes(b"not an image")
    messages = []
    for name in ("missing.jpg", "unreadable.jpg"):
        with pytest.raises(DataError) as caught:
            predict_frame(classifier, pd.DataFrame({"path": [str(small_ham / name)]}), image_root=str(small_ham))
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == "row 0: no readable image at this path"  # no telling which exists


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_metadata_csv_in_another_encoding(small_ham, encoding):
    csv = small_ham / "HAM10000_metadata.csv"
    table = pd.read_csv(csv)
    table["localization"] = "épaule"
    table.to_csv(csv, index=False, encoding=encoding)
    if encoding == "utf-16":
        assert len(open_source(small_ham).records) == len(table)  # a byte-order mark says how to read it
    else:
        with pytest.raises(DataError, match=rf"{csv}: line 2 is not UTF-8 text \(byte 0xe9\)"):
            open_source(small_ham)


def test_an_empty_metadata_csv_is_named(small_ham):
    csv = small_ham / "HAM10000_metadata.csv"
    csv.write_bytes(b"")
    with pytest.raises(DataError, match=f"{csv}: the file is empty"):
        open_source(small_ham)


def test_small_bad_inputs_are_refused_by_name(small_ham):
    with pytest.raises(ConfigError, match="batch_size must be at least 1, got 0"):
        TrainConfig.from_dict({"batch_size": "0"})
    with pytest.raises(ConfigError, match="step_size must be > 0, got -0.01"):
        AttackConfig.from_dict({"method": "uap_fast", "step_size": "-0.01"})
    with pytest.raises(ModelError, match="MLflow loads no model from a web address"):
        tracking.load_classifier("http://127.0.0.1:9/model")


def test_a_poison_fraction_that_flips_nothing_registers_nothing(small_ham):
    config = PoisonConfig(data=DataConfig(path=str(small_ham), image_size=16), epochs=1, experiment="test",
                          poison_fractions=(0.01,))
    with pytest.raises(ConfigError, match=r"poison fraction 0.01 flips no image: the training split holds \d+ nv"):
        run_poison(config)
    assert [r["status"] for r in tracking.search_runs("test")] == ["FAILED"]
    assert tracking.model_versions("medrobust-small_cnn-poisoned") == []


def test_a_relative_data_path_means_the_same_folder_after_a_change_of_folder(small_ham, monkeypatch):
    monkeypatch.chdir(small_ham.parent)
    config = DataConfig(path=small_ham.name, image_size=16)
    assert config.path == str(small_ham)
    monkeypatch.setenv("MEDROBUST_DATA", small_ham.name)
    from_env = DataConfig(image_size=16)
    monkeypatch.chdir("/")
    assert from_env.path == str(small_ham) and len(load_dataset(from_env, progress=False).table) > 0


def test_one_configuration_gives_identical_metrics_in_fresh_processes(small_ham, tmp_path, child_env, monkeypatch):
    figures = []
    for name in ("first", "second"):
        env = child_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name}.db"}
        done = subprocess.run([sys.executable, "-m", "medrobust", "train", "--data", str(small_ham), "--image-size", "16",
                               "--epochs", "2", "--batch-size", "8"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        [run] = tracking.search_runs("medrobust")
        figures.append(tracking.get_run(run["run_id"])["metrics"])
    assert figures[0].keys() == figures[1].keys() and len(figures[0]) > 20
    np.testing.assert_equal(figures[0], figures[1])  # bit for bit; NaN (a class absent from the split) equals NaN
