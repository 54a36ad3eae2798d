"""The evaluation module on synthetic images and tiny linear models, and the defense registry's
contract (order, settings, check_settings)."""

import csv
import io
from dataclasses import fields

import keras
import numpy as np
import pytest

from medrobust import attacks, metrics
from medrobust.config import DefendConfig
from medrobust.data import CLASSES, malignant_mask
from medrobust.defenses import (DEFENSES, FAMILIES, DefendedClassifier, Hooks, applicable, check_settings, input_chain,
                                parse_spec)
from medrobust.errors import ConfigError
from medrobust.evaluation import (FIELDS, Condition, worst_predictions, by_condition, flat_metrics, measure, records_csv, suite,
                                  wide_table, with_rejection)

EPS = 8 / 255
SIZE = 8


def _linear(seed, outputs):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Dense(outputs)(keras.layers.Flatten()(inputs)))


def _brightness_detector():
    """P(adversarial) >= 0.5 exactly when the image's mean brightness is >= 0.5."""
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[0, 10], [0, 10], [0, 10]], np.float32), np.array([0, -15], np.float32)])
    return model


@pytest.fixture(scope="module")
def measured():
    rng = np.random.default_rng(0)
    x = rng.random((42, SIZE, SIZE, 3), dtype=np.float32)
    y = np.arange(42) % len(CLASSES)
    parent = _linear(1, len(CLASSES))
    target = DefendedClassifier(_linear(2, len(CLASSES)), detector=_brightness_detector())
    # the ensemble rows have tests of their own (test_counting.py)
    evaluation = measure(target, x, y, suite(("fgsm",), EPS), surrogate=parent, seed=3, ensemble=False)
    return x, y, parent, target, evaluation


def test_records_are_long_format_with_one_row_per_condition_and_metric(measured):
    *_, evaluation = measured
    records = evaluation.records
    assert all(tuple(r) == FIELDS for r in records)
    keys = [(r["model"], r["attack"], r["threat"], r["eps"], r["metric"]) for r in records]
    assert len(keys) == len(set(keys))
    conditions = list(by_condition(records))
    assert conditions == [("parent", "none", "clean", 0.0), ("defended", "none", "clean", 0.0),
                          ("parent", "fgsm", "whitebox", EPS), ("defended", "fgsm", "transfer", EPS),
                          ("defended", "fgsm", "whitebox", EPS)]
    for m in evaluation.measurements:
        assert [r["metric"] for r in records if (r["model"], r["threat"], r["attack"]) == (m.model, m.threat, m.attack)] \
            == list(m.values)
        assert m.predictions.shape == m.counted.shape == (42,) and m.confusion.sum() == 42
    rows = by_condition(records)
    # The detector's figures exist only for the model that has one, the fooling rate only under attack.
    assert "rejected_rate" in rows[("defended", "none", "clean", 0.0)]
    assert "rejected_rate" not in rows[("parent", "none", "clean", 0.0)]
    assert "fooling_rate" in rows[("defended", "fgsm", "whitebox", EPS)]
    assert "fooling_rate" not in rows[("defended", "none", "clean", 0.0)]


def test_flat_metrics_equal_a_direct_summary(measured):
    x, y, parent, target, evaluation = measured
    malignant = malignant_mask("clinical")

    def summary(pred, prefix):
        return metrics.summary(metrics.confusion_matrix(y, pred, len(CLASSES)), malignant, CLASSES, prefix=prefix)

    parent_clean = parent.predict(x, verbose=0).argmax(1)
    clean = target.logits(x).argmax(1)
    x_transfer, _ = attacks.craft("fgsm", parent, x, EPS, y=y, seed=3)
    x_white, _ = attacks.craft("fgsm", target.as_keras(), x, EPS, y=y, seed=3)
    expected = summary(parent_clean, "parent_clean_")
    # attacked rows count, per image, the worse of clean and attacked (evaluation/worst.py)
    expected |= summary(worst_predictions(y, [parent_clean, parent.predict(x_transfer, verbose=0).argmax(1)],
                                          malignant), "parent_fgsm_")
    expected["parent_fgsm_fooling_rate"] = metrics.fooling_rate(parent_clean, parent.predict(x_transfer, verbose=0).argmax(1))
    for name, images in (("clean", x), ("adv_fgsm_transfer", x_transfer), ("adv_fgsm_whitebox", x_white)):
        pred, rejected = target.logits(images).argmax(1), target.rejected(images)
        assert 0 < rejected.sum() < len(x)  # both kinds of verdict, so the strict and referred figures differ
        strict, referred = with_rejection(y, pred, rejected, "clinical")
        if name == "clean":
            clean_strict = strict
        counted = worst_predictions(y, [clean_strict, strict], malignant)
        expected |= summary(counted, f"{name}_") | summary(referred, f"{name}_referred_")
        expected[f"{name}_rejected_rate"] = float(np.mean(rejected))
        if name != "clean":
            expected[f"{name}_fooling_rate"] = metrics.fooling_rate(clean, pred)
    flat = flat_metrics(evaluation.records)
    assert flat == pytest.approx(evaluation.metrics(), nan_ok=True)
    # The measured model's rows also hold the wall time they took; the rest is the direct summary.
    seconds = {k: flat.pop(k) for k in [k for k in flat if k.endswith("_seconds")]}
    assert sorted(seconds) == ["adv_fgsm_transfer_seconds", "adv_fgsm_whitebox_seconds", "clean_seconds"]
    assert all(v > 0 for v in seconds.values())
    assert flat.keys() == expected.keys()
    assert flat == pytest.approx(expected, nan_ok=True)
    # Per-image predictions are kept, and the white-box images were crafted on the target itself.
    white = evaluation.get("defended", "fgsm", "whitebox")
    np.testing.assert_array_equal(white.predictions, target.logits(x_white).argmax(1))
    np.testing.assert_array_equal(white.examples, x_white[:6])


def test_table_titles_csv_and_one_eps_per_name(measured):
    *_, evaluation = measured
    records = evaluation.records
    table = wide_table(records)
    assert list(table) == ["parent clean", "defended clean", "parent fgsm", "fgsm transfer", "fgsm white-box"]
    assert table["fgsm white-box"]["accuracy"] == flat_metrics(records)["adv_fgsm_whitebox_accuracy"]
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    assert len(rows) == len(records) and tuple(rows[0]) == FIELDS
    assert [float(r["value"]) for r in rows] == pytest.approx([r["value"] for r in records], nan_ok=True)
    other_eps = [dict(r, eps=4 / 255) for r in records if r["threat"] == "whitebox"]
    with pytest.raises(ValueError, match=r"records hold parent_fgsm at eps 0.031\d+ and 0.015\d+"):
        flat_metrics(records + other_eps)


def test_rejection_counts_both_ways():
    # clinical map: akiec(0), bcc(1), mel(4) malignant. Two rejected: a mel and an nv.
    y_true = np.array([4, 5, 5, 1])
    y_pred = np.array([4, 5, 2, 5])
    rejected = np.array([True, True, False, False])
    strict, referred = with_rejection(y_true, y_pred, rejected, "clinical")
    # strict: each rejected image is an error whose health call is wrong too, so the
    # rejected melanoma counts as a missed cancer (benign bkl) and the nv as a false alarm.
    assert strict.tolist() == [2, 0, 2, 5]
    # referred: a rejected image goes to a doctor, counted as correctly handled.
    assert referred.tolist() == [4, 5, 2, 5]
    thesis_strict, _ = with_rejection(y_true, y_pred, rejected, "thesis")  # nv malignant there
    assert thesis_strict.tolist()[:2] == [2, 2]
    assert y_pred.tolist() == [4, 5, 2, 5]  # the input is left as it was


def test_bad_conditions_are_refused_before_any_work(measured):
    x, y, parent, target, _ = measured
    with pytest.raises(ConfigError, match="threat must be one of transfer, whitebox"):
        measure(target, x, y, [Condition("fgsm", EPS, "blackbox")], surrogate=parent)
    with pytest.raises(ConfigError, match="max_steps"):
        measure(target, x, y, [Condition("fgsm", EPS, "whitebox", params={"max_steps": 5})])
    with pytest.raises(ConfigError, match="needs a surrogate"):
        measure(target, x, y, suite(("fgsm",), EPS, threats=("transfer",)))


def test_registry_order_is_the_application_order_and_settings_are_config_fields():
    assert list(DEFENSES) == ["distill", "retrain", "smoothing", "detector", "squeeze", "smooth", "jpeg", "llt"]
    config_fields = {f.name for f in fields(DefendConfig)}
    for name, spec in DEFENSES.items():
        assert spec.name == name and spec.family in FAMILIES and spec.summary
        assert spec.settings and set(spec.settings) <= config_fields, name
    assert parse_spec("llt+distill+jpeg") == ("distill", "jpeg", "llt")


def test_input_builders_fold_into_the_documented_chain():
    network = _linear(0, len(CLASSES))
    config = DefendConfig(defense="llt+squeeze", llt_quality=60, squeeze_bits=3)
    classifier = DefendedClassifier(network)
    for name in parse_spec(config.defense):
        classifier = DEFENSES[name].build(classifier, None, config, Hooks())
    assert classifier.chain == input_chain(("squeeze", "llt"), {"llt": {"quality": 60}, "squeeze": {"bits": 3}})
    assert classifier.chain == (("squeeze", {"bits": 3}), ("llt", {"quality": 60})) and classifier.network is network


def test_check_settings_refuses_a_setting_no_part_reads():
    with pytest.raises(ConfigError, match="temperature is a setting of distill, which the defense 'llt' does not include"):
        check_settings(("llt",), DefendConfig(defense="llt", temperature=5))
    with pytest.raises(ConfigError, match="learning_rate is a setting of distill, retrain, smoothing and detector"):
        check_settings(("jpeg", "llt"), DefendConfig(learning_rate=1e-3))
    check_settings(("llt",), DefendConfig(defense="llt"))  # every setting at its default
    check_settings(("distill", "llt"), DefendConfig(temperature=5, learning_rate=1e-3))  # read by distill
    with pytest.raises(ConfigError, match="uap_max_steps"):
        check_settings(("llt",), DefendConfig(uap_max_steps=10))
    check_settings(("llt",), DefendConfig(uap_max_steps=10), also_read=("uap_max_steps",))
    # A caller holding settings for every defense keeps only those its parts read.
    given = {"rounds": 2, "temperature": 5.0, "eval_eps": 4 / 255, "llt_quality": 60, "uap_max_steps": 10}
    assert applicable(("llt",), given) == {"eval_eps": 4 / 255, "llt_quality": 60}
    assert applicable(("llt",), given, also_read=("uap_max_steps",))["uap_max_steps"] == 10
    check_settings(("llt",), DefendConfig(**applicable(("llt",), given)))
