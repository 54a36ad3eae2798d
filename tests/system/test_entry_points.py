"""Entry points as a user or a scheduler starts them, in a child process: the CLI (bad input,
`predict`), `mlflow run` of main, attack, defend, promote and tune, and a pipeline killed by
SIGTERM and resumed. The same steps run in-process, faster, in tests/steps/."""

import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, PipelineConfig, TrainConfig
from medrobust.predict import RESPONSE_COLUMNS
from medrobust.steps.defend import run_defend
from medrobust.steps.pipeline import KEY_TAG, run_pipeline
from medrobust.steps.train import run_train

from small_pipeline import write_pipeline
from stores import shared_network

NAME = "medrobust-small_cnn"
TRAIN_THEN_ATTACK = """\
     train:
       step: train
       with: {epochs: 1, alias: none}
     attack:
       step: attack
       with: {model_uri: "${train}", method: fgsm}
"""


trained_once, trained = shared_network(epochs=6, per_class_limit=40)


def test_cli_bad_input_is_one_clear_line(tmp_path, child_env):
    for argv, message in ((["--data", str(tmp_path / "missing")], f"{tmp_path / 'missing'} does not exist"),
                          (["--epochs", "0"], "epochs must be at least 1, got 0")):
        done = subprocess.run([sys.executable, "-m", "medrobust", "train", *argv], capture_output=True, text=True,
                              timeout=300, env=child_env())
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no start-up noise, no traceback


def test_predict_cli_on_real_images(trained, ham_dir, tmp_path, child_env):
    _, model = trained
    folder = tmp_path / "some images"
    folder.mkdir()
    files = sorted((ham_dir / "images").glob("*.jpg"))[:4]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())  # 200x150 originals; the model takes 32x32
    out = tmp_path / "predictions.csv"
    done = subprocess.run([sys.executable, "-m", "medrobust", "predict", "--model-uri", model.model_uri, str(folder),
                           "--output", str(out)], capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert len(frame) == 4 and list(frame["path"]) == [str(folder / f.name) for f in files]
    assert set(frame["predicted"]) <= {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert np.allclose(frame.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    assert tuple(frame.columns) == ("path", *RESPONSE_COLUMNS) and not frame["rejected"].any()
    # The trained version carries its own operating point, chosen on its validation split.
    threshold = tracking.load_classifier(model.model_uri).info["operating_threshold"]
    assert (frame["malignant_at_threshold"] == (frame["malignancy_score"] >= threshold)).all()

    (folder / "broken.jpg").write_bytes(b"not a picture")
    done = subprocess.run([sys.executable, "-m", "medrobust", "predict", "--model-uri", model.model_uri, str(folder)],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 2 and "broken.jpg: cannot decode image" in done.stderr, done.stderr[-2000:]


def test_mlflow_run_attack_uap_end_to_end(trained, ham_dir, mlflow_project):
    data, model = trained
    done = mlflow_project("attack", {"model_uri": model.model_uri, "data": ham_dir, "method": "uap",
                                     "per_class_limit": 40, "max_images": 24, "uap_max_iter": 1, "eps": 0.05})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.search_runs("e2e")
    assert [r["status"] for r in runs] == ["FINISHED"]
    run = tracking.get_run(runs[0]["run_id"])
    assert run["params"]["method"] == "uap"
    assert run["metrics"]["perturbation_linf_max"] <= 0.05 + 1e-6
    assert "perturbation/uap.npy" in tracking.list_artifacts(runs[0]["run_id"])


def test_mlflow_run_defend_end_to_end(ham_dir, mlflow_project):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    model = run_train(TrainConfig(data=data, epochs=1, batch_size=32, experiment="test"))
    done = mlflow_project("defend", {"model_uri": model.model_uri, "data": ham_dir, "defense": "llt", "llt_quality": 50,
                                     "per_class_limit": 20, "max_images": 16, "eval_attacks": "fgsm"})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.search_runs("e2e")
    assert [r["status"] for r in runs] == ["FINISHED"]
    run = tracking.get_run(runs[0]["run_id"])
    assert run["params"]["defense"] == "llt" and run["params"]["llt_quality"] == "50"
    assert "adv_fgsm_whitebox_accuracy" in run["metrics"]
    assert tracking.load_classifier("models:/medrobust-small_cnn@candidate").chain == (("llt", {"quality": 50}),)


def test_mlflow_run_promote_with_only_data(small_ham, mlflow_project):
    data = DataConfig(path=str(small_ham), image_size=32)
    model = run_train(TrainConfig(data=data, epochs=1, experiment="test"))
    run_defend(DefendConfig(model_uri=model.model_uri, data=data, defense="llt", eval_attacks=("fgsm",),
                            experiment="test"))
    quick = {"apgd_steps": 5, "square_queries": 20}  # AutoAttack at a test's scale
    done = mlflow_project("promote", {**quick, "data": small_ham, "max_images": 20, "min_robust_macro_recall": 0,
                                      "max_attacked_fnr": 1})
    assert done.returncode == 0, done.stderr[-3000:]
    assert tracking.model_aliases(NAME)["robust"] == 2
    failed = mlflow_project("promote", {**quick, "data": small_ham, "max_images": 20, "min_robust_macro_recall": 1})
    assert failed.returncode == 1 and "medrobust promote: failed: " in failed.stderr


def test_mlflow_run_tune_with_only_data(small_ham, mlflow_project):
    made = run_train(TrainConfig(data=DataConfig(path=str(small_ham), image_size=32), epochs=1, experiment="test"))
    assert made.alias == "baseline"
    done = mlflow_project("tune", {"data": small_ham})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.search_runs("e2e")
    top = [r for r in runs if r["parent"] is None]
    assert len(top) == 1 and top[0]["step"] == "tune" and top[0]["status"] == "FINISHED"
    assert {r["step"] for r in runs if r["parent"] == top[0]["run_id"]} == {"tune-trial"}


def test_mlflow_run_main_is_the_pipeline_and_resumes_in_the_experiment_mlflow_run_chose(tmp_path, ham_dir, mlflow_project):
    path = write_pipeline(tmp_path, TRAIN_THEN_ATTACK, data=ham_dir)
    for attempt in range(2):
        done = mlflow_project("main", {"file": str(path)})  # `mlflow run .`: the entry point main
        assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.search_runs("e2e")
    assert Counter(r["step"] for r in runs) == {"pipeline": 2, "train": 1, "attack": 1}
    assert tracking.search_runs("medrobust") == []  # the pipeline's own default experiment is not used
    second = [r for r in runs if r["step"] == "pipeline"][-1]
    assert tracking.get_run(second["run_id"])["metrics"]["steps_reused"] == 2


def test_after_a_pipeline_that_trains_with_alias_baseline_the_attack_entry_point_works(tmp_path, ham_dir,
                                                                                       mlflow_project):
    """quick.yaml's small_cnn holds @baseline, so the design card's own next command runs on the
    store `make run` leaves; without it the error says which command makes @baseline."""
    from medrobust.errors import ModelError
    baseline = "models:/medrobust-small_cnn@baseline"  # the attack entry point's default model
    with pytest.raises(ModelError, match="no model registered as medrobust-small_cnn"):
        tracking.load_classifier(baseline)
    path = write_pipeline(tmp_path, """\
     small:
       step: train
       with: {arch: small_cnn, epochs: 1, alias: none}
     """, data=ham_dir)
    run_pipeline(PipelineConfig(file=str(path), experiment="e2e"))
    with pytest.raises(ModelError, match=r"has no version @baseline .*`make run` or `medrobust train` sets it"):
        tracking.load_classifier(baseline)
    path.write_text(path.read_text().replace("alias: none", "alias: baseline"))
    run_pipeline(PipelineConfig(file=str(path), experiment="e2e"))
    done = mlflow_project("attack", {"method": "uap", "data": ham_dir, "max_images": 14, "uap_max_iter": 1})
    assert done.returncode == 0, done.stderr[-3000:]
    attack = next(r for r in tracking.search_runs("e2e") if r["step"] == "attack")
    params = tracking.get_run(attack["run_id"])["params"]
    assert params["method"] == "uap" and params["model_uri"] == baseline
    assert params["data.image_size"] == "32"  # the model's input size, read from the model


def test_a_pipeline_killed_after_its_second_step_resumes_without_redoing_them(tmp_path, ham_dir, child_env):
    path = write_pipeline(tmp_path, TRAIN_THEN_ATTACK + """\
     poison:
       step: poison
       with: {epochs: 20, patience: 0, poison_fractions: [0.5], register: false}
     """, data=ham_dir)
    child = subprocess.Popen([sys.executable, "-m", "medrobust", "pipeline", str(path), "--experiment", "test"],
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            done = [r for r in tracking.search_runs("test") if KEY_TAG in tracking.get_run(r["run_id"])["tags"]]
            if len(done) == 2:
                break
            time.sleep(0.3)
        while time.monotonic() < deadline and child.poll() is None:  # kill it inside the third step
            if any(r["step"] == "poison" for r in tracking.search_runs("test")):
                break
            time.sleep(0.3)
        assert child.poll() is None, child.stdout.read()
        child.send_signal(signal.SIGTERM)
        out = child.communicate(timeout=120)[0]
        assert child.returncode == 143, out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    statuses = {r["step"]: r["status"] for r in tracking.search_runs("test")}
    assert statuses["pipeline"] == "KILLED" and statuses["poison"] == "KILLED"

    resumed = run_pipeline(PipelineConfig(file=str(path), experiment="test"))
    assert [s["reused"] for s in resumed.instances] == [True, True, False]
    steps = Counter(r["step"] for r in tracking.search_runs("test"))
    assert steps["train"] == 1 and steps["attack"] == 1 and steps["pipeline"] == 2
    assert tracking.get_run(resumed.instances[2]["run_id"])["status"] == "FINISHED"
