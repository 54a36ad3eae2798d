"""Natural corruptions (evaluation/corruptions.py) and a model measured under them
(evaluation/shift.py), on synthetic images and a toy classifier."""

import numpy as np
import pytest

from medrobust.data import malignant_mask
from medrobust.errors import ConfigError
from medrobust.evaluation.corruptions import CORRUPTIONS, corrupt
from medrobust.evaluation.recap import model_rows
from medrobust.evaluation.records import CORRUPTION, MEAN, record
from medrobust.evaluation.report import headline, render_html
from medrobust.evaluation.shift import corruption_grid, corruption_summary, measure_corruptions, worst_corruption
from medrobust.steps.promote import gate_figures


@pytest.fixture(scope="module")
def lesions():
    """Smooth lesion-like images: a dark blob on skin colour, 32 px."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 31.0
    out = []
    for _ in range(12):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None]
        out.append(np.array([0.85, 0.65, 0.55]) * (1 - 0.7 * blob))
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_keeps_the_image_range_is_seeded_and_grows_with_severity(lesions, name):
    mild, severe = corrupt(lesions, name, 1, seed=3), corrupt(lesions, name, 5, seed=3)
    for out in (mild, severe):
        assert out.shape == lesions.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(mild, corrupt(lesions, name, 1, seed=3))  # the same call, the same images
    change = [np.abs(corrupt(lesions, name, s, seed=3) - lesions).mean() for s in (1, 5)]
    assert 0 < change[0] < change[1], f"{name}: severity 5 should move the images further than severity 1"


def test_random_corruptions_follow_the_seed(lesions):
    for name in ("gaussian_noise", "hair", "motion_blur", "rotate"):
        assert not np.array_equal(corrupt(lesions, name, 3, seed=0), corrupt(lesions, name, 3, seed=1)), name


def test_hair_darkens_only_where_it_is_drawn_and_vignette_only_the_rim(lesions):
    haired = corrupt(lesions, "hair", 5, seed=0)
    darker = (haired.mean(axis=3) < lesions.mean(axis=3) - 0.05)
    assert 0.01 < darker.mean() < 0.5  # strokes, not a veil
    ringed = corrupt(lesions, "vignette", 5, seed=0)
    assert np.allclose(ringed[:, 14:18, 14:18], np.round(lesions[:, 14:18, 14:18] * 255) / 255, atol=1 / 255)
    assert ringed[:, 0, 0].max() == 0.0  # the corners are outside the dermatoscope's circle


def test_unknown_corruption_and_severity_name_the_setting(lesions):
    with pytest.raises(ConfigError, match="unknown corruption 'fog'") as e:
        corrupt(lesions, "fog", 1)
    assert e.value.settings == ("corruptions",)
    with pytest.raises(ConfigError, match="severities are 1 to 5") as e:
        corrupt(lesions, "jpeg", 6)
    assert e.value.settings == ("severities",)


class BrightnessClassifier:
    """Calls an image malignant (mel) when it is dark, nv otherwise: a shift in brightness moves
    its calls, noise barely does."""

    detector = None
    can_reject = False

    def logits(self, images):
        dark = (0.6 - images.mean(axis=(1, 2, 3))) * 40
        out = np.full((len(images), 7), -20.0)
        out[:, 4], out[:, 5] = dark, -dark
        return out


def _measured(lesions, names=("brightness", "gaussian_noise"), severities=(1, 3)):
    classifier = BrightnessClassifier()
    y = np.where(lesions.mean(axis=(1, 2, 3)) < 0.6, 4, 5)
    logits = classifier.logits(lesions)
    scores = np.exp(logits[:, 4]) / np.exp(logits).sum(axis=1)
    records = measure_corruptions(classifier, lesions, y, logits.argmax(axis=1), scores, threshold=0.5,
                                  model="target", corruptions=names, severities=severities, n_resamples=200)
    return records, y


def test_measure_corruptions_pairs_each_row_against_clean_and_averages_per_severity(lesions):
    records, y = _measured(lesions)
    rows = {(r["attack"], r["eps"]): {} for r in records}
    for r in records:
        assert r["threat"] == CORRUPTION
        rows[(r["attack"], r["eps"])][r["metric"]] = r["value"]
    assert set(rows) == {(n, s) for n in ("brightness", "gaussian_noise", MEAN) for s in (1.0, 3.0)}
    clean_accuracy = 1.0  # the toy classifier is right on every clean image by construction
    for (name, severity), v in rows.items():
        assert v["change_accuracy"] == pytest.approx(v["accuracy"] - clean_accuracy)
        assert v["accuracy_ci_low"] <= v["accuracy"] <= v["accuracy_ci_high"]
        assert v["change_accuracy_ci_low"] <= v["change_accuracy"] <= v["change_accuracy_ci_high"]
        assert "op_fnr" in v and "change_op_fnr" in v
    for severity in (1.0, 3.0):
        mean = rows[(MEAN, severity)]
        assert mean["accuracy"] == pytest.approx((rows[("brightness", severity)]["accuracy"]
                                                  + rows[("gaussian_noise", severity)]["accuracy"]) / 2)
    # brightening makes dark lesions look light: cancers are missed, more at severity 3
    assert rows[("brightness", 3.0)]["op_fnr"] >= rows[("brightness", 1.0)]["op_fnr"]
    assert rows[("brightness", 3.0)]["op_fnr"] - rows[("brightness", 3.0)]["change_op_fnr"] == 0  # clean misses none
    assert rows[("brightness", 3.0)]["change_op_fnr_ci_low"] > 0  # a difference, paired against clean
    assert rows[("brightness", 3.0)]["op_fnr"] > rows[("gaussian_noise", 3.0)]["op_fnr"]


def test_corruption_views_grid_worst_and_summary(lesions):
    records, _ = _measured(lesions)
    names, severities, values = corruption_grid(records, model="target", metric="op_fnr")
    assert names == ("brightness", "gaussian_noise") and severities == (1, 3) and values.shape == (2, 2)
    worst = worst_corruption(records, model="target", metric="op_fnr", severity=3)
    assert worst["corruption"] == "brightness" and worst["value"] == values[0, 1] == values[:, 1].max()
    text, metrics = corruption_summary(records, model="target", severities=(1, 3))
    assert metrics["corruption_worst_3_op_fnr"] == worst["value"]
    assert "under brightness" in text["corruptions, severity 3"]


def test_corruption_rows_are_no_attack_for_the_headline_the_recap_and_the_gate(lesions):
    records, _ = _measured(lesions)
    clean = [record("target", "none", "clean", 0.0, m, v) for m, v in
             (("accuracy", 0.9), ("macro_recall", 0.8), ("fnr", 0.1), ("op_fnr", 0.05))]
    everything = clean + records
    # brightness breaks the toy classifier, yet the headline is the worst *attacked* (here: clean) row
    assert headline(everything, model="target")["accuracy"]["attack"] == "none"
    assert all(key[0] in ("none", MEAN) for key in model_rows(everything))  # the recap keeps only the means
    page = render_html(title="t", summary={}, records=everything, model="target", figures={})
    assert "Natural corruptions" in page and page.count("<td class=\"name\">brightness</td>") == 2
    figures = gate_figures(everything, 2 / 255, severity=3)
    worst = worst_corruption(records, model="target", metric="op_fnr", severity=3)
    assert figures["corrupted_fnr"] == (worst["value"], "brightness at severity 3 (corruption)")
    assert "corrupted_fnr" not in gate_figures(clean, 2 / 255, severity=3)


def test_malignant_mask_is_what_the_toy_classifier_assumes():
    assert malignant_mask("clinical")[4] and not malignant_mask("clinical")[5]  # mel malignant, nv benign
