"""Scale-out for real: a PostgreSQL server, an `mlflow server` on it, and two `medrobust tune`
worker processes on one Optuna study in PostgreSQL. Every trial is recorded once in Optuna and
once in MLflow, and a worker killed mid-trial (SIGKILL: no clean-up of its own) leaves a failed
trial that the other worker retries. The second worker starts once the first is dead: started
together, it may spend its trials before the dead one's heartbeat is stale, and then nobody
retries (seen on CI)."""

import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from medrobust import tracking
from servers import mlflow_server, postgres

STUDY = "workers"


def _worker(ham_dir, storage, env, n_trials):
    cmd = [sys.executable, "-m", "medrobust", "tune", "--objective", "train", "--data", str(ham_dir),
           "--image-size", "32", "--per-class-limit", "20", "--trial-epochs", "6", "--n-trials", str(n_trials),
           "--storage", storage, "--study-name", STUDY, "--heartbeat", "1", "--experiment", "scale"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trial_runs():
    """[(run, tags)] of the study's trial runs in the tracking server."""
    out = []
    for r in tracking.search_runs("scale"):
        if r["step"] == "tune-trial":
            out.append((r, tracking.get_run(r["run_id"])["tags"]))
    return out


def test_two_workers_share_one_study_and_a_killed_workers_trial_is_retried(tmp_path, ham_dir, child_env, monkeypatch):
    with postgres() as db, mlflow_server(db["mlflow"], tmp_path / "artifacts", child_env()) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        env = child_env()
        doomed = _worker(ham_dir, db["optuna"], env, n_trials=3)
        survivor = None
        try:
            deadline, killed = time.monotonic() + 300, None
            while time.monotonic() < deadline and doomed.poll() is None:
                running = [(r, tags) for r, tags in _trial_runs()
                           if r["status"] == "RUNNING" and tags.get("medrobust.pid") == str(doomed.pid)]
                if running:
                    time.sleep(1.5)  # well inside its training
                    doomed.send_signal(signal.SIGKILL)
                    killed = running[0][1]["optuna.trial"]
                    break
                time.sleep(0.3)
            assert killed is not None, doomed.communicate()[0][-3000:]
            doomed.wait()
            # The other worker joins once the dead one's heartbeat is stale (2 x 1 s): the first
            # trial it starts fails the dead trial and runs its retry.
            time.sleep(3)
            survivor = _worker(ham_dir, db["optuna"], env, n_trials=2)
            out = survivor.communicate(timeout=600)[0]
            assert survivor.returncode == 0, out[-3000:]
        finally:  # a failed assertion must not leave TensorFlow workers on the cores
            for worker in (doomed, survivor):
                if worker is not None and worker.poll() is None:
                    worker.kill()
                    worker.wait()

        study = optuna.load_study(study_name=STUDY, storage=db["optuna"])
        trials = {t.number: t for t in study.trials}
        assert trials[int(killed)].state == TrialState.FAIL
        retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == int(killed)]
        # the retry ran to its end (the median pruner may stop it, as any trial)
        assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) for t in study.trials)

        tracking.fail_orphaned_runs()  # what the next command on this host does first
        runs = _trial_runs()
        numbers = Counter(tags["optuna.trial"] for _, tags in runs)
        assert set(numbers) == {str(n) for n in trials} and set(numbers.values()) == {1}  # each trial once
        status = {tags["optuna.trial"]: r["status"] for r, tags in runs}
        assert status[killed] == "FAILED"
        assert all(status[str(t.number)] == "FINISHED" for t in study.trials if t.state == TrialState.COMPLETE)
        workers = {tags["medrobust.pid"] for _, tags in runs}
        assert workers == {str(doomed.pid), str(survivor.pid)}
