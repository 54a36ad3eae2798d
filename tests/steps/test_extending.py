"""A new attack and a new defense are each one function plus one table entry (ATTACKS,
DEFENSES): registered here as toys, they run through a pipeline and through tune with nothing
else changed, since the pipeline and tune ask the tables, never a name of their own."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from medrobust import attacks, defenses, tracking
from medrobust.attacks import AttackSpec
from medrobust.config import DataConfig, PipelineConfig, TuneConfig
from medrobust.defenses import DefenseSpec
from medrobust.steps.pipeline import run_pipeline
from medrobust.steps.tune import run_tune
from small_pipeline import write_pipeline


def toy_signs(model, x, *, y, eps, norm, target, seed=0):
    """Random signs at the full budget: the weakest attack there is."""
    return x + eps * np.random.default_rng(seed).choice([-1.0, 1.0], size=x.shape).astype(x.dtype)


def toy_cooled(classifier, data, config, hooks):
    """The network with its logits halved: the same classes, softer probabilities."""
    network = keras.models.clone_model(classifier.network)
    network.set_weights(classifier.network.get_weights())
    logits = network.get_layer("logits")
    logits.kernel.assign(logits.kernel * 0.5)
    logits.bias.assign(logits.bias * 0.5)
    return replace(classifier, network=network)


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(attacks.ATTACKS, "toy_signs",
                        AttackSpec("toy_signs", toy_signs, ("inf",), False, False, "random signs; a test's"))
    monkeypatch.setitem(defenses.DEFENSES, "toy_cooled",
                        DefenseSpec("toy_cooled", "model", toy_cooled, (), "logits halved; a test's"))


STEPS = """\
train:
  step: train
  with: {epochs: 1, alias: none}
defend:
  step: defend
  with: {model_uri: "${train}", defense: toy_cooled, eval_attacks: [toy_signs], max_images: 8, alias: none}
attack:
  step: attack
  grid: {model_uri: ["${train}", "${defend}"], method: [toy_signs, fgsm]}
  with: {max_images: 8, seed: 3}
"""


def test_a_toy_attack_and_defense_run_through_pipeline_and_tune(toys, tmp_path, ham_dir):
    done = run_pipeline(PipelineConfig(file=str(write_pipeline(tmp_path, STEPS, data=ham_dir)), experiment="toys"))
    labels = {i["label"] for i in done.instances}
    assert {"attack toy_signs 2/255 on small_cnn", "attack toy_signs 2/255 on toy_cooled on small_cnn"} <= labels
    defended = next(i for i in done.instances if i["step"] == "defend")
    assert tracking.get_run(defended["run_id"])["params"]["defense"] == "toy_cooled"
    for instance in done.instances:
        if instance["step"] == "attack":
            run = tracking.get_run(instance["run_id"])
            assert 0 <= run["metrics"]["fooling_rate"] <= 1 and run["params"]["n_images"] == "8"

    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    eps = run_tune(TuneConfig(objective="attack_eps", model_uri=defended["output"], data=data, method="toy_signs",
                              eps_max=4 / 255, eps_step=2 / 255, max_images=8, n_trials=2, experiment="toys"))
    assert eps.trials[0]["params"]["eps_index"] == 2 and all(t["run_id"] for t in eps.trials)  # bisection: the top first
    defense = run_tune(TuneConfig(objective="defense", model_uri=done.instances[0]["output"], data=data,
                                  defense="retrain+toy_cooled", max_rounds=1, max_images=8, n_trials=1,
                                  suites=("health",), experiment="toys"))
    [trial] = defense.trials
    assert trial["state"] == "COMPLETE" and trial["params"]["rounds"] == 1
