"""The attack step on a model trained on a real HAM10000 subset, tracked in a throwaway store."""

import numpy as np
import pytest

from medrobust import tracking
from medrobust.config import AttackConfig, TrainConfig
from medrobust.defenses import DefendedClassifier
from medrobust.steps.attack import run_attack
from medrobust.steps.train import run_train

from stores import shared_network


trained_once, trained = shared_network(epochs=6, per_class_limit=40)


def test_fgsm_attack_run_logs_everything(trained):
    data, model = trained
    result = run_attack(AttackConfig(model_uri=model.model_uri, data=data, method="fgsm", eps=8 / 255,
                                     experiment="test"))
    run = tracking.get_run(result.run_id)
    m = run["metrics"]
    assert run["status"] == "FINISHED" and run["tags"]["medrobust.threat_model"] == "white-box"
    for key in ("clean_accuracy", "adv_accuracy", "adv_fnr", "adv_npv", "fooling_rate", "attack_success_rate",
                "perturbation_linf_max", "perturbation_psnr", "attack_images_per_second"):
        assert key in m, key
    assert m["perturbation_linf_max"] <= 8 / 255 + 1e-6
    assert run["params"]["data.image_size"] == "32"  # the model's input size, not the CLI default
    assert m["fooling_rate"] > 0.05  # the harm on a real model is measured in test_attacks.py
    assert m["adv_accuracy"] <= m["clean_accuracy"]  # counted per image as the worse of clean and attacked
    shares = [m[f"adv_predicted_share_{c}"] for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")]
    assert sum(shares) == pytest.approx(1.0)
    artifacts = tracking.list_artifacts(result.run_id)
    for path in ("confusion/adv_7x7.json", "confusion/adv_2x2.png", "examples/grid.png",
                 "predictions/class_histogram.json"):
        assert path in artifacts, path


def test_transfer_uap_fast_logs_the_perturbation(trained, ham_dir):
    data, target = trained
    surrogate = run_train(TrainConfig(data=data, epochs=1, batch_size=32, seed=1, experiment="test"))
    result = run_attack(AttackConfig(model_uri=target.model_uri, attack_model_uri=surrogate.model_uri, data=data,
                                     method="uap_fast", eps=8 / 255, max_steps=20, experiment="test"))
    run = tracking.get_run(result.run_id)
    assert run["tags"]["medrobust.threat_model"] == "transfer"
    assert "perturbation/uap.npy" in tracking.list_artifacts(result.run_id)
    assert result.perturbation.shape == (1, 32, 32, 3)
    assert np.abs(result.perturbation).max() <= 8 / 255 + 1e-6


def test_bad_attack_requests_fail_before_any_run(trained):
    data, model = trained
    with pytest.raises(ValueError, match="no model registered as no-such-model .*run train first"):
        run_attack(AttackConfig(model_uri="models:/no-such-model/1", data=data))
    with pytest.raises(ValueError, match="model URI runs:/0123/model does not resolve"):
        run_attack(AttackConfig(model_uri="runs:/0123/model", data=data))
    with pytest.raises(ValueError, match="attack fgsm takes no max_steps"):
        run_attack(AttackConfig(model_uri=model.model_uri, data=data, max_steps=5))
    with pytest.raises(ValueError, match="deepfool has no inf norm"):
        run_attack(AttackConfig(model_uri=model.model_uri, data=data, method="deepfool", norm="inf"))
    with pytest.raises(ValueError, match="target must be one of akiec, .*, got 'mole'"):
        run_attack(AttackConfig(model_uri=model.model_uri, data=data, target="mole"))
    with pytest.raises(ValueError, match="eps must be in"):
        AttackConfig(model_uri=model.model_uri, eps=10.0)
    assert [r["status"] for r in tracking.search_runs("test")] == ["FINISHED"]  # only the training run


def test_surrogate_of_another_shape_is_refused(trained):
    data, model = trained
    from medrobust.models import create_model

    with tracking.run("test", run_name="other-shape"):
        other = create_model("small_cnn", (16, 16, 3), 7)
        other_uri, _ = tracking.log_classifier(DefendedClassifier(other, info={"operating_threshold": 0.5}))
    with pytest.raises(ValueError, match=r"surrogate .* takes \(16, 16, 3\) .* target .* takes \(32, 32, 3\)"):
        run_attack(AttackConfig(model_uri=model.model_uri, attack_model_uri=other_uri, data=data))
    assert len(tracking.search_runs("test")) == 2  # the training run and the logged model, no attack run
