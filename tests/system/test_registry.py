"""The registry under kills and races (issue 20): a version is usable only once its run
finished, and alias moves are a checked transaction. Each fault is a real process killed with
SIGKILL at a patched registry call, or two real promote processes at once."""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from medrobust import tracking
from medrobust.config import DataConfig, TrainConfig
from medrobust.defenses import DefendedClassifier
from medrobust.steps.train import run_train

NAME = "medrobust-small_cnn"

# Runs a medrobust command in a child process that kills itself (SIGKILL: no handler, no
# cleanup) at the nth call of one MlflowClient method: a kill at exactly that point.
KILLED_AT = """
import os, signal, sys
from mlflow.tracking import MlflowClient
from medrobust import cli
method, nth = sys.argv[1], int(sys.argv[2])
original, calls = getattr(MlflowClient, method), []
def cut(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
setattr(MlflowClient, method, cut)
sys.exit(cli.main(sys.argv[3:]))
"""


def _killed_at(method, nth, args, env):
    child = subprocess.run([sys.executable, "-c", KILLED_AT, method, str(nth), *args], env=env, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]


def _next_command():
    """What every command does first: open a top-level run (recover_store runs before it)."""
    with tracking.run("next"):
        pass


def _model_with_versions(data_dir, count):
    """A tiny network registered `count` times (v1 @baseline, then plain versions)."""
    model = run_train(TrainConfig(data=DataConfig(path=str(data_dir), image_size=16), epochs=1, experiment="test"))
    for _ in range(count - 1):
        tracking.register_model(model.model_uri, NAME)
    return model


def test_a_version_of_a_killed_training_is_deleted_by_the_next_command(small_ham, child_env, caplog):
    train = ["train", "--data", str(small_ham), "--image-size", "16", "--epochs", "1", "--experiment", "faults"]
    _killed_at("set_registered_model_alias", 1, train, child_env())  # registered, @baseline not yet moved
    [version] = tracking.model_versions(NAME)
    assert tracking.model_aliases(NAME) == {}  # the defect: a READY version of a run that never finished
    with caplog.at_level(logging.WARNING):
        _next_command()
    assert tracking.model_versions(NAME) == []
    [run] = [r for r in tracking.search_runs("faults")]
    assert run["status"] == "FAILED" and run["run_id"] == version["run_id"]
    assert f"{NAME} v1 deleted: its run did not finish" in caplog.text


def _log_network():
    """Inside an active run: log an untrained 16-pixel network; returns its models:/ URI."""
    from medrobust.models import create_model

    return tracking.log_classifier(DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7),
                                                       info={"operating_threshold": 0.5}))[1]


def test_a_version_registered_before_its_run_failed_is_deleted_and_its_alias_given_back():
    with tracking.run("test"):
        logged = _log_network()
        assert tracking.register_model(logged, NAME, alias="candidate") == 1
    with pytest.raises(RuntimeError, match="after registration"):
        with tracking.run("test"):
            assert tracking.register_model(_log_network(), NAME, alias="candidate") == 2
            assert tracking.model_aliases(NAME) == {"candidate": 2}
            raise RuntimeError("after registration")
    assert [v["version"] for v in tracking.model_versions(NAME)] == [1]
    assert tracking.model_aliases(NAME) == {"candidate": 1}  # given back to the version it held before
    assert [r["status"] for r in tracking.search_runs("test")] == ["FINISHED", "FAILED"]


GATE = ["--suites", "health", "--max-images", "8", "--apgd-steps", "2", "--n-resamples", "10",
        "--min-robust-macro-recall", "none", "--max-attacked-fnr", "none", "--max-accuracy-loss", "1",
        "--experiment", "gate"]


def _start(args, env):
    """A medrobust process whose stderr lines a thread collects into .said as they come."""
    child = subprocess.Popen([sys.executable, "-m", "medrobust", *args], env=env, stderr=subprocess.PIPE, text=True)
    child.said = []
    child.reader = threading.Thread(target=lambda: child.said.extend(iter(child.stderr.readline, "")), daemon=True)
    child.reader.start()
    return child


def _wait_for(predicate, seconds=300):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _freeze_between_writes(child):
    """SIGSTOP `child` at a moment it holds no lock on this test's SQLite store: frozen inside a
    transaction (its lock's heartbeat writes now and then) it would lock every other process out
    ('database is locked' once, in 1 of many runs)."""
    store = os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):]
    for _ in range(200):
        child.send_signal(signal.SIGSTOP)
        db = sqlite3.connect(store, timeout=0.1, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")  # granted only while no other connection reads or writes
            db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            child.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        finally:
            db.close()
    raise AssertionError("the child never left the store alone")


def _promote(version, data_dir):
    return ["promote", "--model-uri", f"models:/{NAME}/{version}", "--data", str(data_dir), *GATE]


def test_two_promotes_at_once_keep_every_version_in_the_chain(small_ham, child_env):
    _model_with_versions(small_ham, 3)
    tracking.set_alias(NAME, "robust", 1)
    first = _start(_promote(2, small_ham), child_env())
    _wait_for(lambda: tracking.registry.lock_holder(NAME) is not None or first.poll() is not None)
    # The first holds the lock (its gate is under way): freeze it there, so the second
    # certainly finds the lock held, whatever the machine's speed, then let it go on.
    _freeze_between_writes(first)
    second = _start(_promote(3, small_ham), child_env())
    try:
        _wait_for(lambda: "waiting for run" in "".join(second.said) or second.poll() is not None)
    finally:
        first.send_signal(signal.SIGCONT)
    for child in (first, second):
        child.wait(timeout=600)
        child.reader.join()
        assert child.returncode == 0, "".join(child.said)[-3000:]
    assert "waiting for run" in "".join(second.said)
    # v2 was @robust in between, and v3's gate compared against it, not against v1
    assert {a: v for a, v in tracking.model_aliases(NAME).items() if a != "baseline"} == {"robust": 3, "previous": 2}
    runs = {tracking.get_run(r["run_id"])["params"]["model_uri"]: tracking.get_run(r["run_id"])["params"]
            for r in tracking.search_runs("gate") if r["step"] == "promote"}
    assert runs[f"models:/{NAME}/2"]["current_version"] == "1"
    assert runs[f"models:/{NAME}/3"]["current_version"] == "2"
    assert tracking.registry.lock_holder(NAME) is None


def test_a_promotion_killed_between_its_alias_moves_is_undone_by_the_next_command(small_ham, child_env, caplog):
    _model_with_versions(small_ham, 3)
    tracking.set_alias(NAME, "robust", 1)
    tracking.set_alias(NAME, "previous", 2)
    _killed_at("set_registered_model_alias", 2, _promote(3, small_ham), child_env())  # @robust moved, @previous not
    assert tracking.model_aliases(NAME)["robust"] == 3 and tracking.model_aliases(NAME)["previous"] == 2
    assert tracking.registry.lock_holder(NAME) is not None
    with caplog.at_level(logging.WARNING):
        _next_command()
    assert tracking.model_aliases(NAME) == {"baseline": 1, "robust": 1, "previous": 2}
    assert tracking.model_version_tags(f"models:/{NAME}/3")["gate_result"] == "interrupted"
    assert tracking.registry.lock_holder(NAME) is None
    assert "a promotion of v3 was cut between its alias moves; undone" in caplog.text
    [promote] = [r for r in tracking.search_runs("gate") if r["step"] == "promote"]
    assert promote["status"] == "FAILED"


def test_a_promote_waits_for_a_live_lock_and_then_names_its_holder(small_ham, monkeypatch):
    _model_with_versions(small_ham, 1)
    with tracking.promotion_lock(NAME, owner="a-live-run"):
        with pytest.raises(Exception, match=r"being promoted by run a-live-run .* waited 1 s for its lock"):
            with tracking.promotion_lock(NAME, owner="another", wait_s=1.0, poll_s=0.1):
                pass
    assert tracking.registry.lock_holder(NAME) is None


def test_an_interrupt_between_the_alias_moves_is_undone_at_once(monkeypatch):
    """Ctrl-C (a KeyboardInterrupt here) between @robust and @previous: the move is put back
    before the command stops, and the lock is released."""
    from mlflow.tracking import MlflowClient

    with tracking.run("test"):
        logged = _log_network()
        for _ in range(2):
            tracking.register_model(logged, NAME)
    tracking.set_alias(NAME, "robust", 1)
    original, calls = MlflowClient.set_registered_model_alias, []

    def cut(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("SIGTERM")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", cut)
    with pytest.raises(KeyboardInterrupt):
        with tracking.promotion_lock(NAME, owner="test") as move:
            move(2, "robust", "previous")
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", original)
    assert calls[0][1:] == ("robust", "2")  # @robust had moved when the interrupt came
    assert tracking.model_aliases(NAME) == {"robust": 1}
    assert tracking.model_version_tags(f"models:/{NAME}/2")["gate_result"] == "interrupted"
    assert tracking.registry.lock_holder(NAME) is None
