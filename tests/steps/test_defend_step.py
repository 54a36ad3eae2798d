"""The defend step and `predict` on a model trained on a real HAM10000 subset."""

import logging

import numpy as np
import pandas as pd
import pytest

from medrobust import tracking
from medrobust.config import AttackConfig, DataConfig, DefendConfig
from medrobust.data import CLASSES, load_dataset, stratified_subset
from medrobust.defenses import DefendedClassifier, parse_spec
from medrobust.errors import ConfigError
from medrobust.evaluation import by_condition, flat_metrics
from medrobust.predict import RESPONSE_COLUMNS, predict_frame
from medrobust.steps.attack import run_attack
from medrobust.steps.defend import run_defend

from stores import shared_network

EPS = 8 / 255  # large enough that FGSM clearly hurts the small test model


# 100 images a class and a 30 % test split: ~210 test images, enough for a margin to mean something.
trained_once, trained = shared_network(epochs=8, per_class_limit=100, fractions=(0.6, 0.1, 0.3))


def _defend(data, model, defense, **kw):
    settings = dict(model_uri=model.model_uri, data=data, defense=defense, eval_eps=EPS, eval_attacks=("fgsm",),
                    experiment="test")
    parts = parse_spec(defense)  # a setting of a part the defense lacks is refused
    settings |= {"retrain_eps": EPS} if "retrain" in parts else {}
    settings |= {"detector_eps": EPS} if "detector" in parts else {}
    return run_defend(DefendConfig(**(settings | kw)))


def test_retraining_raises_accuracy_under_fgsm(trained):
    data, model = trained
    result = _defend(data, model, "retrain", rounds=2, epochs_per_round=3, learning_rate=1e-3)
    m = result.metrics
    # Each model under its own white-box FGSM on the true labels, counted per image as the worse of
    # clean and attacked (measured: 0.13 against 0.10), and the retrained one under the parent's
    # FGSM images too.
    assert m["adv_fgsm_whitebox_accuracy"] > m["parent_fgsm_accuracy"], m
    assert m["adv_fgsm_transfer_accuracy"] > m["parent_fgsm_accuracy"], m
    run = tracking.get_run(result.run_id)
    assert run["status"] == "FINISHED" and run["tags"]["medrobust.defense"] == "retrain"
    assert len(tracking.metric_history(result.run_id, "retrain_loss")) == 6  # 2 rounds x 3 epochs
    assert "report/before_after.txt" in tracking.list_artifacts(result.run_id)

    # retrain+llt takes that retrained network instead of retraining: the same weights, no epochs
    settings = dict(rounds=2, epochs_per_round=3, learning_rate=1e-3)
    combined = _defend(data, model, "retrain+llt", retrained_uri=result.model_uri, **settings)
    assert tracking.metric_history(combined.run_id, "retrain_loss") == []
    retrained, both = tracking.load_classifier(result.model_uri), tracking.load_classifier(combined.model_uri)
    assert all(np.array_equal(a, b) for a, b in zip(retrained.network.get_weights(), both.network.get_weights()))
    assert both.chain and both.info["spec"] == "retrain+llt"
    with pytest.raises(ConfigError, match=r"retrained_uri .* was retrained with other settings: rounds 2 \(here 3\)"):
        _defend(data, model, "retrain+llt", retrained_uri=result.model_uri, **(settings | {"rounds": 3}))
    with pytest.raises(ConfigError, match=r"retrained_uri .* is not a retrain defense \(its defense: retrain\+llt\)"):
        _defend(data, model, "retrain+llt", retrained_uri=combined.model_uri, **settings)


def test_detector_flags_held_out_fgsm_images(trained):
    data, model = trained
    result = _defend(data, model, "detector", detector_epochs=6)
    m = result.metrics
    # The test split was never seen by the detector (trained on train, validated on val);
    # measured: 0.995 of FGSM images rejected, 0.005 of clean ones.
    assert m["adv_fgsm_transfer_rejected_rate"] > 0.8, m
    assert m["clean_rejected_rate"] < 0.3, m
    # Both ways of counting a rejection are logged; counting rejected images as sent to a
    # doctor can only help.
    assert m["adv_fgsm_transfer_referred_accuracy"] >= m["adv_fgsm_transfer_accuracy"]
    assert m["adv_fgsm_transfer_referred_fnr"] <= m["adv_fgsm_transfer_fnr"]


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_defended_model_round_trips_through_the_registry(trained, ham_dir, monkeypatch):
    data, model = trained
    lines, logger = _Lines(), logging.getLogger("medrobust.steps.defend")
    logger.addHandler(lines)
    level, logger.level = logger.level, logging.INFO
    try:
        result = _defend(data, model, "retrain+llt", rounds=1, epochs_per_round=1, llt_quality=60)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    m = result.metrics
    # One closing line: the run, the headline figures before -> after, the registration.
    assert lines.lines[-1] == (f"defend retrain+llt: run {result.run_id}  accuracy {m['parent_clean_accuracy']:.3f} -> "
                               f"{m['clean_accuracy']:.3f}  FNR {m['parent_clean_fnr']:.3f} -> {m['clean_fnr']:.3f}  "
                               f"fgsm white-box accuracy {m['adv_fgsm_whitebox_accuracy']:.3f}  "
                               "registered medrobust-small_cnn v2 @candidate")
    assert result.version == 2 and result.registered_name == "medrobust-small_cnn"
    # What was logged is what the result says: the flat metrics from the long-format records,
    # under the names every release has logged, and the records themselves as a CSV artifact.
    logged = tracking.get_run(result.run_id)["metrics"]
    assert result.metrics == flat_metrics(result.records)
    assert {k: logged[k] for k in result.metrics} == pytest.approx(result.metrics, nan_ok=True)
    assert list(by_condition(result.records)) == [("parent", "none", "clean", 0.0), ("defended", "none", "clean", 0.0),
                                                  ("parent", "fgsm", "whitebox", EPS),
                                                  ("defended", "fgsm", "transfer", EPS),
                                                  ("defended", "fgsm", "whitebox", EPS),
                                                  ("parent", "ensemble", "whitebox", EPS),
                                                  ("defended", "ensemble", "whitebox", EPS)]
    assert list(result.table) == ["parent clean", "defended clean", "parent fgsm", "fgsm transfer", "fgsm white-box",
                                  "parent ensemble", "ensemble white-box"]
    artifacts = tracking.list_artifacts(result.run_id)
    assert {"report/records.csv", "report/before_after.txt", "confusion/adv_fgsm_whitebox_7x7.json",
            "confusion/parent_fgsm_2x2.json", "examples/fgsm_whitebox.png", "training/retrain_history.json"} <= set(artifacts)
    # every condition's matrices as JSON; drawn for each model's clean and per-image worst rows only
    measured = {a[len("confusion/"):-len("_7x7.json")] for a in artifacts if a.endswith("_7x7.json")}
    drawn = {a[len("confusion/"):-len("_7x7.png")] for a in artifacts if a.endswith("_7x7.png")}
    assert len(measured) == 7 and drawn == {c for c in measured if "clean" in c or "ensemble" in c}, (measured, drawn)
    assert len(drawn) == 4 and {f"confusion/{c}_2x2.png" for c in drawn} <= set(artifacts)
    assert "retrain_loss" in logged and "adv_fgsm_whitebox_fooling_rate" in logged
    loaded = tracking.load_classifier("models:/medrobust-small_cnn@candidate")
    assert loaded.chain == (("llt", {"quality": 60}),)
    assert loaded.info["parent_model_uri"] == model.model_uri
    test = load_dataset(data)
    x = test.x["test"][:16]
    frame = predict_frame(loaded, x)
    in_process = tracking.load_classifier(result.model_uri)
    np.testing.assert_allclose(frame.filter(like="p_").to_numpy(), predict_frame(in_process, x).filter(like="p_").to_numpy(),
                               rtol=1e-5, atol=1e-6)
    # The defense is really applied: without the LLT the network answers otherwise.
    bare = predict_frame(type(loaded)(loaded.network), x)
    assert not np.allclose(bare.filter(like="p_").to_numpy(), frame.filter(like="p_").to_numpy())
    # Through MLflow's own pyfunc loader, from image paths, as `mlflow models predict` does.
    files = sorted((ham_dir / "images").glob("*.jpg"))[:3]
    monkeypatch.setenv("MEDROBUST_IMAGE_ROOT", str(ham_dir))  # a served model reads only below it
    pyfunc = tracking.pyfunc_predict("models:/medrobust-small_cnn@candidate", pd.DataFrame({"path": map(str, files)}))
    assert tuple(pyfunc.columns) == RESPONSE_COLUMNS and len(pyfunc) == len(files)
    assert np.allclose(pyfunc.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    # The operating point travels inside the model: the same health call as the version's tag.
    threshold = loaded.info["operating_threshold"]
    version_tags = tracking.model_version_tags("models:/medrobust-small_cnn@candidate")
    assert float(version_tags["operating_threshold"]) == pytest.approx(threshold, abs=1e-6)
    assert version_tags["operating_point_run"] == result.run_id
    assert (pyfunc["malignant_at_threshold"] == (pyfunc["malignancy_score"] >= threshold)).all()
    # From MLflow's own CLI (a child process): tests/system/test_serving_http.py.
    # The attack step takes the defended model by its URI and attacks it whole (LLT by BPDA).
    attacked = run_attack(AttackConfig(model_uri="models:/medrobust-small_cnn@candidate", data=data, method="fgsm",
                                       eps=EPS, max_images=16, experiment="test"))
    # the same 16 images the step measured (its class-stratified sample, seed 0), not the first 16
    keep = stratified_subset(test.y["test"], 16, seed=0)
    sampled = predict_frame(loaded, test.x["test"][keep])
    assert attacked.metrics["clean_accuracy"] == pytest.approx(
        float(np.mean(sampled["predicted"].to_numpy() == np.asarray(CLASSES)[test.y["test"][keep]])))
    registered = tracking.model_versions("medrobust-small_cnn")[-1]
    assert registered["tags"]["defense"] == "retrain+llt" and registered["tags"]["parent_model_uri"] == model.model_uri


@pytest.mark.parametrize("change, message", [
    ({"defense": "retrain+blur"}, "unknown defense 'blur'"),
    ({"retrain_attacks": ("nope",)}, "unknown attack method 'nope'"),
    ({"defense": "retrain", "on_the_fly": True, "retrain_attacks": ("uap",)}, "on-the-fly retraining takes one attack"),
    ({"defense": "llt", "temperature": 5.0}, "temperature is a setting of distill, which the defense 'llt' does not"),
    ({"defense": "llt", "eval_attacks": ("uap_fast",), "uap_max_steps": 5, "rounds": 2}, "rounds is a setting of retrain"),
    ({"model_uri": "runs:/0123456789abcdef/model"}, "does not resolve"),
])
def test_bad_defend_request_fails_before_any_run(ham_dir, change, message):
    # The checks run before the model is loaded, so a model URI that resolves is not needed.
    config = dict(model_uri="runs:/0123456789abcdef/model", data=DataConfig(path=str(ham_dir)), experiment="test")
    with pytest.raises(ValueError, match=message):
        run_defend(DefendConfig(**(config | change)))
    assert tracking.search_runs("test") == []


@pytest.mark.parametrize("change, message", [({"llt_quality": 0}, r"llt_quality must be in \[1, 100\]"),
                                             ({"ratio": 1.5}, r"ratio must be in \(0, 1\]")])
def test_bad_defend_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        DefendConfig(model_uri="runs:/x/model", **change)


def test_a_model_that_is_not_a_lesion_classifier_is_refused(ham_dir):
    from medrobust.models.zoo import small_cnn

    with tracking.run("test", run_name="binary"):
        uri, _ = tracking.log_classifier(DefendedClassifier(small_cnn((32, 32, 3), 2, widths=(8,)),
                                                          info={"operating_threshold": 0.5}))
    with pytest.raises(ValueError, match="is not a skin-lesion classifier"):
        run_defend(DefendConfig(model_uri=uri, data=DataConfig(path=str(ham_dir)), defense="llt", experiment="test"))
