"""The tune step on a model trained on a real HAM10000 subset: the attack_eps bisection against
a brute-force scan, one nested run per trial, a pruned trial in both Optuna and MLflow, and bad
requests refused before any run."""

import numpy as np
import optuna
import pytest

from medrobust import tracking
from medrobust.attacks import craft
from medrobust.config import DataConfig, TuneConfig
from medrobust.data import load_dataset, stratified_subset
from medrobust.errors import ConfigError, StudyFailed, TrainingError
from medrobust.models.training import predict_logits
from medrobust.steps.tune import run_tune, train_defaults

from stores import network_once, start_from

STEP = 1 / 255


@pytest.fixture
def baseline(ham_dir, tmp_path_factory, tmp_path):
    # Trained enough for FGSM to fool it (4 epochs on 30 images per class give a network whose
    # answer barely depends on the image: fooling rate 0 up to 16/255); test_counting's network,
    # trained once for both.
    store, made = network_once(tmp_path_factory, ham_dir, epochs=6, per_class_limit=60)
    start_from(store, tmp_path)
    return made


def _children(parent):
    return [r for r in tracking.search_runs("test") if r["parent"] == parent]


def test_attack_eps_finds_the_brute_force_eps_and_each_trial_is_one_run(baseline):
    data, model = baseline
    loaded = load_dataset(data, progress=False)
    keep = stratified_subset(loaded.y["test"], 40, seed=0)
    x, y = loaded.x["test"][keep], loaded.y["test"][keep]
    network = tracking.load_keras_model(model.model_uri)
    own = predict_logits(network, x).argmax(axis=1)
    # the attack step's FGSM: on the true labels, its fooling rate against the clean predictions
    rates = [float(np.mean(predict_logits(network, craft("fgsm", network, x, k * STEP, y=y)[0]).argmax(axis=1) != own))
             for k in range(1, 9)]
    assert rates[-1] > 0.2, rates
    target = rates[4] if rates[4] > 0 else rates[-1]  # reached at 5/255 (or 8/255) or before
    brute = next(k for k, r in enumerate(rates, start=1) if r >= target) * STEP
    result = run_tune(TuneConfig(objective="attack_eps", model_uri=model.model_uri, data=data, eps_max=8 * STEP,
                                 eps_step=STEP, target_fooling_rate=target, max_images=40, experiment="test"))
    assert abs(result.summary["eps"] - brute) <= STEP + 1e-9, (result.summary, rates)
    # a bisection of 8 points: the top, then at most 3 halvings
    assert 2 <= len(result.trials) <= 4 and all(t["state"] == "COMPLETE" for t in result.trials)
    trial_runs = _children(result.run_id)
    assert len(trial_runs) == len(result.trials) and {r["step"] for r in trial_runs} == {"tune-trial"}
    assert sorted(t["run_id"] for t in result.trials) == sorted(r["run_id"] for r in trial_runs)
    run = tracking.get_run(result.run_id)
    assert run["metrics"]["eps"] == pytest.approx(result.summary["eps"])
    assert {"tune/trials.csv", "tune/best.json", "tune/history.png"} <= set(tracking.list_artifacts(result.run_id))
    # The same study again: every point it needs is known, so no trial is run twice.
    again = run_tune(TuneConfig(objective="attack_eps", model_uri=model.model_uri, data=data, eps_max=8 * STEP,
                                eps_step=STEP, target_fooling_rate=target, max_images=40, experiment="test"))
    assert again.summary["eps"] == result.summary["eps"] and len(again.trials) == len(result.trials)
    with pytest.raises(ConfigError, match="was made for other settings \\(target_fooling_rate\\)"):
        run_tune(TuneConfig(objective="attack_eps", model_uri=model.model_uri, data=data, eps_max=8 * STEP,
                            eps_step=STEP, target_fooling_rate=0.99, max_images=40, experiment="test"))


def test_a_pruned_trial_is_pruned_in_optuna_and_in_mlflow(ham_dir, monkeypatch):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    # Optuna's median pruner decides from the other trials; here trial 1 is told to stop at its
    # second epoch, so what is tested is what we do with a pruned trial.
    asked = {}

    def should_prune(self):  # called once per epoch, after the epoch's report
        asked[self.number] = asked.get(self.number, 0) + 1
        return self.number == 1 and asked[1] >= 2

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", should_prune)
    result = run_tune(TuneConfig(objective="train", data=data, trial_epochs=3, n_trials=3, experiment="test"))
    states = [t["state"] for t in result.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    runs = {r["run_id"]: r for r in tracking.search_runs("test")}
    trial_runs = [r for r in runs.values() if r["parent"] == result.run_id]
    assert len(trial_runs) == 3
    pruned = next(r for r in trial_runs if tracking.get_run(r["run_id"])["tags"]["optuna.trial"] == "1")
    assert tracking.get_run(pruned["run_id"])["tags"]["optuna.trial_state"] == "PRUNED"
    assert pruned["status"] == "KILLED"
    inner = [r for r in runs.values() if r["parent"] == pruned["run_id"]]
    assert [r["status"] for r in inner] == ["KILLED"]  # the training it stopped
    assert len(tracking.metric_history(inner[0]["run_id"], "val_macro_recall")) == 2
    assert result.best_params and 0 <= result.best_value <= 1
    # a new train study starts from today's defaults, then searches
    assert result.trials[0]["params"] == train_defaults() == {
        "learning_rate": 2e-3, "use_weight_decay": False, "dropout": 0.3, "width": 1.0, "class_weight": "sqrt",
        "augment": True, "batch_size": 64}
    assert result.trials[1]["params"] != result.trials[0]["params"]


def test_a_study_with_no_finished_trial_fails(ham_dir, monkeypatch):
    """Every trial pruned: the study answers nothing, so it fails (exit 1) naming what became of
    its trials, and its run is FAILED, not a success with 'best {} = None'."""
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    with pytest.raises(StudyFailed, match=r"no trial of study .* finished \(2 pruned\)") as failed:
        run_tune(TuneConfig(objective="train", data=data, trial_epochs=1, n_trials=2, experiment="test"))
    assert failed.value.exit_status == 1
    study_run = next(r for r in tracking.search_runs("test") if r["parent"] is None)
    assert study_run["status"] == "FAILED"


@pytest.mark.parametrize("ending", [TrainingError("training diverged"), KeyboardInterrupt()])
def test_a_trial_that_fails_or_is_stopped_keeps_its_parameters_and_state(ham_dir, monkeypatch, ending):
    """A failed trial, and one stopped by Ctrl-C or SIGTERM (both end the process by an exception
    through the trial), leave the parameters they drew and optuna.trial_state FAIL on their run."""
    from dataclasses import replace

    from medrobust.steps.tune import OBJECTIVES

    def trial(t, config, context):
        t.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        raise ending

    monkeypatch.setitem(OBJECTIVES, "train", replace(OBJECTIVES["train"], trial=trial))
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    with pytest.raises((StudyFailed, KeyboardInterrupt)):
        run_tune(TuneConfig(objective="train", data=data, n_trials=1, experiment="test"))
    trial_run = next(r for r in tracking.search_runs("test") if r["parent"] is not None)
    run = tracking.get_run(trial_run["run_id"])
    assert "learning_rate" in run["params"] and run["tags"]["optuna.trial_state"] == "FAIL"


def test_a_resumed_study_does_not_draw_the_first_workers_parameters_again():
    """Every worker once seeded its sampler with the same seed, so a resumed study (or a second
    worker) drew exactly the first one's parameters. Now a study holding trials seeds anew."""
    from medrobust.steps.tune import sampler_for, sampler_seed

    config = TuneConfig(objective="train")
    assert sampler_seed(0, 0) == 0 and sampler_seed(0, 3) != sampler_seed(0, 4) != 0

    def draw(study):
        study.optimize(lambda t: t.suggest_float("learning_rate", 1e-5, 1e-1, log=True), n_trials=1)
        return study.trials[-1].params

    study = optuna.create_study(sampler=sampler_for(config), direction="maximize")
    first = draw(study)
    assert draw(optuna.create_study(sampler=sampler_for(config), direction="maximize")) == first  # by seed
    study.sampler = sampler_for(config, n_existing=len(study.trials))  # what open_study does on resume
    assert draw(study) != first


@pytest.mark.parametrize("change, message", [
    ({"objective": "speed"}, "objective must be one of attack_eps, poison_fraction, defense, train, got 'speed'"),
    ({"eps_max": 1.5}, r"eps_max must be in \[0, 1\]"),
    ({"fraction_max": 0.0}, r"fraction_max must be in \(0, 1\]"),
    ({"eps_step": 0.1, "eps_max": 0.05}, "eps_step 0.1 is larger than eps_max 0.05"),
    ({"fraction_max": 0.01}, "fraction_max must be at least 0.05"),
    ({"objective": "defense", "defense": "llt"}, "has no retrain part"),
    ({"objective": "train", "storage": "postgresql://nobody@127.0.0.1:9/none"}, "cannot open Optuna storage postgresql://"),
])
def test_bad_requests_fail_before_any_run(ham_dir, change, message):
    with pytest.raises(ConfigError, match=message):
        run_tune(TuneConfig.from_dict({"data": {"path": str(ham_dir)}, "experiment": "test",
                                       "model_uri": "runs:/none/model", **change}))
    assert tracking.search_runs("test") == []
