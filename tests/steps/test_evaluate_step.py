"""The evaluate step on a model trained on a real HAM10000 subset: suites, the operating
point, intervals, the report, an external test set."""

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, EvaluateConfig, PromoteConfig
from medrobust.data import CLASSES, load_dataset, malignant_mask
from medrobust.data.labels import ISIC2018_COLUMNS
from medrobust.errors import ConfigError, DataError, GateFailed
from medrobust.evaluation.operating_point import health_at_threshold, malignancy_score
from medrobust.evaluation import Condition, measure
from medrobust.evaluation.suite import softmax
from medrobust.steps.defend import run_defend
from medrobust.steps.evaluate import operating_threshold, run_evaluate, suite_conditions
from medrobust.steps.promote import run_promote

from stores import network_once, shared_network, start_from


trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))


def _by_condition(records, model="target"):
    out = {}
    for r in records:
        if r["model"] == model:
            out.setdefault((r["attack"], r["threat"], round(r["eps"] * 255, 6)), {})[r["metric"]] = r["value"]
    return out


def test_standard_suite_report_headline_and_intervals(trained):
    data, model = trained
    result = run_evaluate(EvaluateConfig(model_uri=model.model_uri, data=data, suites=("standard",), n_resamples=200,
                                         pgd_steps=3, apgd_steps=5, square_queries=20, max_images=24,
                                         experiment="test"))
    rows = _by_condition(result.records)
    assert {k[0] for k in rows} == {"none", "fgsm", "pgd", "autoattack", "ensemble"}
    assert "no surrogate" in result.notes[0]  # a plain model: transfer rows run white-box, and it says so
    for figures in rows.values():
        if "accuracy_ci_low" in figures:
            assert figures["accuracy_ci_low"] <= figures["accuracy"] <= figures["accuracy_ci_high"]
    worst = min(f["accuracy"] for f in rows.values() if "accuracy" in f)
    # the headline is the ensemble row, the per-image worst over the suite: no row is lower
    assert result.headline["accuracy"]["value"] == worst == rows[("ensemble", "whitebox", 2.0)]["accuracy"]
    assert result.headline["accuracy"]["attack"] in ("ensemble", "none")  # "none": nothing broke (clean first on ties)
    assert result.headline["fnr"]["value"] == max(f["fnr"] for f in rows.values() if "fnr" in f)
    run = tracking.get_run(result.run_id)
    assert run["status"] == "FINISHED" and run["tags"]["medrobust.step"] == "evaluate"
    assert run["metrics"]["worst_accuracy"] == pytest.approx(worst)
    assert 0 <= run["metrics"]["operating_threshold"] <= 1
    page = open(tracking.download_artifact(result.run_id, "report/report.html", "page")).read()
    for attack in ("fgsm", "pgd", "autoattack", "ensemble", "per-image worst over the suite"):
        assert attack in page
    assert "data:image/png;base64," in page and "http" not in page.replace(model.model_uri, "")
    assert "confusion: no attack (clean)" in page and "examples: " in page
    assert all(f["seconds"] > 0 for k, f in rows.items() if k[0] != "ensemble")
    # One nested run per report row, named by its condition, with that row's figures.
    nested = [r for r in tracking.search_runs("test") if r["parent"] == result.run_id]
    assert len(nested) == len(rows) and {r["step"] for r in nested} == {"evaluate-row"}
    clean_run = next(r for r in nested if r["name"] == "no attack (clean)")
    assert tracking.get_run(clean_run["run_id"])["metrics"]["accuracy"] == rows[("none", "clean", 0.0)]["accuracy"]


def test_natural_corruptions_are_reported_paired_against_clean_and_gate_a_promotion(trained):
    data, model = trained
    suite = dict(data=data, suites=("corruptions",), corruptions=("brightness", "defocus_blur", "hair"),
                 severities=(1, 3, 5), max_images=40, n_resamples=200, experiment="test")
    result = run_evaluate(EvaluateConfig(model_uri="models:/medrobust-small_cnn/1", **suite))
    corrupted = {}
    for r in result.records:
        if r["threat"] == "corruption":
            corrupted.setdefault((r["attack"], r["eps"]), {})[r["metric"]] = r["value"]
    assert set(corrupted) == {(a, s) for a in ("brightness", "defocus_blur", "hair", "mean") for s in (1.0, 3.0, 5.0)}
    clean = _by_condition(result.records)[("none", "clean", 0.0)]
    for (attack, severity), v in corrupted.items():
        assert v["change_accuracy"] == pytest.approx(v["accuracy"] - clean["accuracy"])
        assert v["change_op_fnr"] == pytest.approx(v["op_fnr"] - clean["op_fnr"])
        assert v["op_fnr_ci_low"] <= v["op_fnr"] <= v["op_fnr_ci_high"]
    # the headline stays the attacks' (none here): corruptions are no attack
    assert result.headline["accuracy"]["attack"] == "none"
    run = tracking.get_run(result.run_id)
    assert run["metrics"]["corruption_mean_3_accuracy"] == pytest.approx(corrupted[("mean", 3.0)]["accuracy"])
    worst = max(corrupted[(a, 3.0)]["op_fnr"] for a in ("brightness", "defocus_blur", "hair"))
    assert run["metrics"]["corruption_worst_3_op_fnr"] == pytest.approx(worst)
    page = tracking.load_text_artifact(result.run_id, "report/report.html")
    assert "Natural corruptions" in page and "corruptions: accuracy" in page and "corruptions: op_fnr" in page
    assert "corruptions, severity 3" in page  # the summary line: mean accuracy, worst op_fnr and where
    assert "corruption" in tracking.load_text_artifact(result.run_id, "report/records.csv")

    # The gate reads the worst op_fnr over the corruptions at severity 3, from this very run.
    gate = dict(suite, model_uri="models:/medrobust-small_cnn/1", min_robust_macro_recall=None, max_attacked_fnr=None,
                max_accuracy_loss=None)
    passed = run_promote(PromoteConfig(**gate, max_corrupted_fnr=worst))
    assert passed.passed and passed.reused and passed.evaluate_run_id == result.run_id
    assert passed.criteria[0]["where"].endswith("at severity 3 (corruption)")
    try:  # a gate asking that no cancer fall under the threshold fails exactly when one does
        strict_passed = run_promote(PromoteConfig(**gate, max_corrupted_fnr=0.0)).passed
    except GateFailed as e:
        strict_passed = False
        assert "max_corrupted_fnr" in str(e)
    assert strict_passed == (worst == 0)
    with pytest.raises(ConfigError, match="max_corrupted_fnr reads the corruptions suite"):
        PromoteConfig(**(gate | {"suites": ("health",)}), max_corrupted_fnr=0.5)
    with pytest.raises(ConfigError, match="corruption_severity 2 is not among the severities measured"):
        PromoteConfig(**gate, max_corrupted_fnr=0.5, corruption_severity=2)


def test_operating_point_reaches_its_target_on_validation(trained):
    data, model = trained
    classifier = tracking.load_classifier(model.model_uri)
    loaded = load_dataset(data, progress=False)
    malignant = malignant_mask("clinical")
    config = EvaluateConfig(model_uri=model.model_uri, data=data, target_sensitivity=0.9)
    threshold = operating_threshold(config, classifier, loaded, malignant)
    scores = malignancy_score(softmax(classifier.logits(loaded.x["val"])), malignant)
    assert health_at_threshold(scores, malignant[loaded.y["val"]], threshold)["sensitivity"] >= 0.9


def test_presets_expand_to_their_conditions():
    config = EvaluateConfig(suites=("thesis", "standard", "full"), curve_attacks=("fgsm",), curve_eps=(0.0, 4 / 255))
    conditions, notes = suite_conditions(config, has_surrogate=True)
    keys = [(c.attack, round(c.eps * 255), c.threat) for c in conditions]
    assert len(keys) == len(set(keys)) and not notes  # each condition once, whatever asks for it
    # eps 0 is the clean row, not a condition; full's health attack on the score
    assert set(keys) == {("fgsm", 2, "transfer"), ("uap", 2, "transfer"), ("uap_fast", 2, "transfer"),
                         ("pgd", 2, "transfer"), ("fgsm", 2, "whitebox"),
                         ("pgd", 2, "whitebox"), ("autoattack", 2, "whitebox"), ("apgd", 2, "whitebox"),
                         ("health", 2, "whitebox"), ("fgsm", 4, "whitebox")}
    assert next(c for c in conditions if c.attack == "pgd").params == {"steps": 20, "random_start": True}
    # AutoAttack runs white-box only (its Square queries the target), with RobustBench's settings
    assert next(c for c in conditions if c.attack == "autoattack").params == {"steps": 100, "n_targets": 9,
                                                                              "queries": 5000}
    plain, notes = suite_conditions(EvaluateConfig(suites=("thesis",)), has_surrogate=False)
    assert {c.threat for c in plain} == {"whitebox"} and "no surrogate" in notes[0]


def _test_images(data, n=40):
    loaded = load_dataset(data, progress=False)
    return loaded.x["test"][:n], loaded.y["test"][:n]


def test_security_curve_starts_at_clean_and_does_not_rise(trained):
    data, model = trained
    x, y = _test_images(data)
    network = tracking.load_classifier(model.model_uri)
    conditions = [Condition(a, eps, "whitebox", params={"steps": 5} if a == "pgd" else {})
                  for a in ("fgsm", "pgd") for eps in (0.0, 4 / 255, 16 / 255)]
    evaluation = measure(network, x, y, conditions, names=("target", "surrogate"))
    clean = evaluation.get("target").values
    for attack in ("fgsm", "pgd"):
        at_zero = evaluation.get("target", attack, "whitebox")  # the first: eps 0
        assert at_zero.eps == 0 and at_zero.values["fooling_rate"] == 0
        figures = {k: v for k, v in clean.items() if k != "seconds"}  # every figure but the time taken
        np.testing.assert_equal({k: at_zero.values[k] for k in figures}, figures)  # exactly; NaN == NaN here
        curve = [m.values["accuracy"] for m in evaluation.measurements if m.attack == attack]
        assert curve[2] <= curve[1] <= curve[0] <= clean["accuracy"]  # per image worst: no rise at all


def test_llt_white_box_bpda_hurts_at_least_as_much_as_transfer(trained):
    data, model = trained
    defended = run_defend(DefendConfig(model_uri=model.model_uri, data=data, defense="llt", eval_attacks=("fgsm",),
                                       eval_eps=8 / 255, max_images=8, experiment="test", register=False))
    x, y = _test_images(data)
    conditions = [Condition(a, 8 / 255, threat, params={"steps": 10} if a == "pgd" else {})
                  for a in ("fgsm", "pgd") for threat in ("transfer", "whitebox")]
    evaluation = measure(tracking.load_classifier(defended.model_uri), x, y, conditions,
                         surrogate=tracking.load_classifier(model.model_uri), seed=0, names=("target", "surrogate"))
    for attack in ("fgsm", "pgd"):
        white = evaluation.get("target", attack, "whitebox").values["accuracy"]
        assert white <= evaluation.get("target", attack, "transfer").values["accuracy"], attack


def _isic2018_folder(folder, picked, ham_dir):
    folder.mkdir()
    onehot = pd.DataFrame({"image": picked.image_id})
    for column in ISIC2018_COLUMNS:
        onehot[column] = (picked.dx.str.upper() == column).astype(float).to_numpy()
    onehot.to_csv(folder / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    for image_id in picked.image_id:
        shutil.copy(ham_dir / "images" / f"{image_id}.jpg", folder)
    return folder


def test_an_isic2018_folder_is_evaluated_whole(trained, ham_dir, ham_metadata, tmp_path):
    from medrobust.steps.lineage import seen_images

    _, model = trained
    seen = seen_images(model.model_uri)
    assert 200 <= len(seen) <= 250  # train and val of about 40 images a class
    # An external set that holds images the model trained on is refused, with their count.
    leaky = _isic2018_folder(tmp_path / "leaky", ham_metadata[ham_metadata.image_id.isin(seen)].head(3), ham_dir)
    config = EvaluateConfig(model_uri=model.model_uri, data=DataConfig(path=str(leaky)), split="all",
                            suites=("health",), threshold=0.5, n_resamples=50, pgd_steps=3, experiment="test")
    with pytest.raises(DataError, match="3 of the 3 images of its all split were used to train or validate"):
        run_evaluate(config)
    unseen = ham_metadata[~ham_metadata.image_id.isin(seen) & (ham_metadata.dx != "df")]
    folder = _isic2018_folder(tmp_path / "isic2018_test", unseen.groupby("dx").head(6), ham_dir)  # may lack a class
    result = run_evaluate(replace(config, data=DataConfig(path=str(folder))))
    clean = _by_condition(result.records)[("none", "clean", 0.0)]
    assert clean["op_fnr_ci_low"] <= clean["op_fnr"] <= clean["op_fnr_ci_high"]
    page = open(tracking.download_artifact(result.run_id, "report/report.html", tmp_path / "page")).read()
    assert "isic2018" in page and f"{CLASSES[0]} 6" in page and "df 0" in page
    run = tracking.get_run(result.run_id)
    assert run["params"]["data.image_size"] == "32" and run["params"]["split"] == "all"


def test_a_test_split_that_holds_training_images_is_refused(trained):
    """A model trained with another split seed sees another test split: evaluating it there is
    refused with the count of images it trained or validated on (issue 20, 9)."""
    data, model = trained
    other = replace(data, split_seed=1)
    with pytest.raises(DataError, match=r"\d+ of the \d+ images of its test split were used to train or validate"):
        run_evaluate(EvaluateConfig(model_uri=model.model_uri, data=other, suites=("health",), n_resamples=50,
                                    experiment="test"))
    # A larger subset of the same split: its test images are the full data's, none of them seen.
    run_evaluate(EvaluateConfig(model_uri=model.model_uri, data=replace(data, per_class_limit=80), suites=("health",),
                                max_images=20, apgd_steps=2, n_resamples=50, experiment="test"))


@pytest.mark.parametrize("change, message", [
    ({"suites": ("strong",)}, "suites must be one of thesis, standard, adaptive, autoattack, health, corruptions, "
                                     "certified, full, got 'strong'"),
    ({"suites": ("corruptions",), "corruptions": ("fog",)}, "unknown corruption 'fog'; known: gaussian_noise"),
    ({"severities": (0, 6)}, r"severities must be in \[1, 5\]"),
    ({"suites": ()}, "suites needs at least one value"),
    ({"curve_eps": (0.0, 2.0)}, r"curve_eps must be in \[0, 1\]"),
    ({"target_sensitivity": 1.0}, r"target_sensitivity must be in \(0, 1\)"),
    ({"curve_attacks": ("fgsm", "nope")}, "unknown attack method 'nope'"),
])
def test_bad_requests_fail_before_any_run(ham_dir, change, message):
    with pytest.raises(ConfigError, match=message):
        run_evaluate(EvaluateConfig.from_dict({"data": {"path": str(ham_dir)}, "experiment": "test", **change}))
    assert tracking.search_runs("test") == []


def test_the_operating_point_is_stored_with_the_model_and_used_by_predict(trained, ham_dir, tmp_path):
    from medrobust.config import PredictConfig
    from medrobust.steps.predict import run_predict

    data, model = trained
    uri = f"models:/medrobust-small_cnn/{model.version}"
    result = run_evaluate(EvaluateConfig(model_uri=uri, data=data, suites=("health",), n_resamples=20,
                                         apgd_steps=10, experiment="test"))
    rows = _by_condition(result.records)
    clean, health = rows[("none", "clean", 0.0)], rows[("health", "whitebox", 2.0)]
    # the health attack pushes cancers' malignancy scores down and benign ones up
    assert health["op_fnr_ci_low"] <= health["op_fnr"] <= health["op_fnr_ci_high"]
    assert health["op_fnr"] > clean["op_fnr"] and health["op_sensitivity"] == pytest.approx(1 - health["op_fnr"])
    assert health["op_specificity"] < clean["op_specificity"]  # the converse: needless biopsies
    tags = tracking.model_versions("medrobust-small_cnn")[0]["tags"]
    assert float(tags["operating_threshold"]) == pytest.approx(result.threshold, abs=1e-6)
    assert tags["operating_point_run"] == result.run_id
    files = sorted((ham_dir / "images").glob("*.jpg"))[:5]
    frame = run_predict(PredictConfig(inputs=tuple(map(str, files)), model_uri=uri, output=str(tmp_path / "p.csv"))).frame
    expected = frame["malignancy_score"] >= float(tags["operating_threshold"])
    assert (frame["malignant_at_threshold"] == expected).all()
    np.testing.assert_allclose(frame["malignancy_score"], frame[["p_akiec", "p_bcc", "p_mel"]].sum(axis=1), rtol=1e-6)


def test_the_joint_attack_gets_more_images_past_the_detector(ham_dir, tmp_path_factory, tmp_path):
    # More images than the other tests: a detector needs them; test_defend_step's network (trained
    # once for both modules).
    store, (data, model) = network_once(tmp_path_factory, ham_dir, epochs=8, per_class_limit=100,
                                        fractions=(0.6, 0.1, 0.3))
    start_from(store, tmp_path)
    defended = run_defend(DefendConfig(model_uri=model.model_uri, data=data, defense="detector", detector_eps=8 / 255,
                                       detector_attacks=("pgd",), detector_epochs=6, eval_attacks=("pgd",),
                                       eval_eps=8 / 255, max_images=8, experiment="test", register=False))
    result = run_evaluate(EvaluateConfig(model_uri=defended.model_uri, data=data, suites=("adaptive",), eps=8 / 255,
                                         pgd_steps=10, apgd_steps=5, n_resamples=20, max_images=60, experiment="test"))
    rows = _by_condition(result.records)
    plain, joint = rows[("pgd", "whitebox", 8.0)], rows[("joint_pgd", "whitebox", 8.0)]
    assert plain["rejected_rate"] > 0.5, plain  # the detector catches plain PGD ...
    assert joint["rejected_rate"] < plain["rejected_rate"] - 0.2, joint  # ... and far less of the joint attack
    assert joint["fooling_rate"] > 0.2  # which still changes the classifier's answers
