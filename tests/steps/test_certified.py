"""Randomized smoothing on a network trained on a real HAM10000 subset: the `smoothing` defense
registers a version that votes and abstains, and `evaluate --suites certified` reports its
certificate, which an L2 PGD attack inside the certified radius never breaks."""

import numpy as np
import pytest

from medrobust import tracking
from medrobust.config import DefendConfig, EvaluateConfig
from medrobust.steps.defend import run_defend
from medrobust.steps.evaluate import run_evaluate

from stores import shared_network

# trained once per session for every module asking for these settings (stores.network_once)
trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))


def test_a_smoothed_version_is_certified_and_no_attack_inside_its_radius_changes_its_answer(trained):
    data, trained = trained
    defended = run_defend(DefendConfig(model_uri=trained.model_uri, data=data, defense="smoothing", sigma=0.12,
                                       smoothing_epochs=1, smoothing_samples=16, eval_attacks=("fgsm",), max_images=12,
                                       alias="none", experiment="test"))
    version = f"models:/medrobust-small_cnn/{defended.version}"
    classifier = tracking.load_classifier(version)
    assert classifier.smoothing == {"sigma": 0.12, "samples": 16, "alpha": 0.001, "seed": 0}

    result = run_evaluate(EvaluateConfig(model_uri=version, data=data, suites=("certified",), certify_samples=100,
                                         certify_images=24, n_resamples=100, pgd_steps=5, experiment="test"))
    rows = {}
    for r in result.records:
        if r["threat"] == "certified":
            rows.setdefault(r["eps"], {})[r["metric"]] = r["value"]
    radii = sorted(rows)
    assert radii == [0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
    assert rows[0.0]["certify_sigma"] == 0.12 and rows[0.0]["certify_n"] == 100 and rows[0.0]["certify_images"] == 24
    accuracy = [rows[r]["certified_accuracy"] for r in radii]
    assert all(a >= b for a, b in zip(accuracy, accuracy[1:]))  # a larger ball certifies no more
    assert rows[0.0]["certified_accuracy"] > 0
    for r in radii[1:]:
        assert rows[r]["violations"] == 0, f"an attack inside the certified radius {r} changed a certified answer"
        assert rows[r]["empirical_accuracy"] >= rows[r]["certified_accuracy"] - 0.07  # the vote's sampling aside
        assert rows[r]["certified_fnr"] >= rows[0.0]["certified_fnr"]
    assert not result.notes  # the version's own sigma: nothing to warn about
    run = tracking.get_run(result.run_id)
    assert run["metrics"]["certified_0.25_certified_accuracy"] == pytest.approx(rows[0.25]["certified_accuracy"])
    page = tracking.load_text_artifact(result.run_id, "report/report.html")
    assert "Certified robustness (randomized smoothing)" in page and "certified: accuracy and FNR" in page
    assert result.headline["accuracy"]["attack"] == "none"  # a certificate is no attack row

    # a plain network is certified at the default noise, and the report says it was not trained for it
    plain = run_evaluate(EvaluateConfig(model_uri=trained.model_uri, data=data, suites=("certified",),
                                        certify_samples=20, certify_images=4, n_resamples=50, pgd_steps=2,
                                        experiment="test"))
    assert any("not trained under noise" in n or "without smoothing" in n for n in plain.notes)
    assert np.isfinite([r["value"] for r in plain.records if r["metric"] == "certified_accuracy"]).all()
