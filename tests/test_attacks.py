"""Attacks keep their budget, a UAP is shared, and FGSM / uap_fast hurt a real HAM10000 model."""

import numpy as np
import pytest

from medrobust.attacks import ATTACKS, check_attack, craft, perturbation_sizes
from medrobust.config import DataConfig, TrainConfig
from medrobust.data import load_dataset
from medrobust.models import create_model
from medrobust.models.training import fit, predict_logits, set_seed

FAST_PARAMS = {"pgd": {"steps": 3}, "cw": {"steps": 2}, "deepfool": {"steps": 3},
               "uap": {"max_iter": 1}, "uap_fast": {"max_steps": 5, "eval_every": 5}}


@pytest.fixture(scope="module")
def tiny():
    set_seed(0)
    model = create_model("small_cnn", (16, 16, 3), 7)
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    x[0] = 0.0  # images at the box edges: clipping must hold there too
    x[1] = 1.0
    return model, x


@pytest.mark.parametrize("method,norm", [(m, n) for m in sorted(ATTACKS) for n in ATTACKS[m][1]])
def test_every_attack_keeps_budget_and_box(tiny, method, norm):
    model, x = tiny
    eps = 8 / 255 if norm == "inf" else 0.5
    x_adv, perturbation = craft(method, model, x, eps, norm, **FAST_PARAMS.get(method, {}))
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-6
    if ATTACKS[method][3]:
        assert perturbation.shape == (1, 16, 16, 3)
        np.testing.assert_allclose(x_adv, np.clip(x + perturbation, 0, 1), atol=1e-6)


@pytest.mark.parametrize("norm,eps,target", [("inf", 8 / 255, None), ("inf", 8 / 255, 5), ("2", 0.5, None)])
def test_our_fgsm_gives_arts_images(tiny, norm, eps, target):
    model, x = tiny
    ours, _ = craft("fgsm", model, x, eps, norm, target=target)
    art, _ = craft("fgsm_art", model, x, eps, norm, target=target)
    np.testing.assert_allclose(ours, art, atol=1e-5)  # float32 gradient arithmetic differs in order
    delta = (ours - x).reshape(len(x), -1)
    size = np.abs(delta).max() if norm == "inf" else np.linalg.norm(delta, axis=1).max()
    assert size > eps / 2  # and both really moved the images


def test_uap_is_one_perturbation_for_all_images(tiny):
    model, x = tiny
    x_adv, v = craft("uap_fast", model, x, 8 / 255, "inf", max_steps=10, eval_every=5)
    inner = (x > 0.05) & (x < 0.95)  # away from the box, the shared perturbation shows unclipped
    deltas = x_adv - x
    for i in range(2, len(x)):
        np.testing.assert_allclose(deltas[i][inner[i]], np.broadcast_to(v[0], x[i].shape)[inner[i]], atol=1e-6)
    assert np.abs(v).max() > 0


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown attack method 'bim'"):
        check_attack("bim", 0.1, "inf")
    with pytest.raises(ValueError, match="eps must be in"):
        check_attack("fgsm", 2.0, "inf")
    with pytest.raises(ValueError, match="eps must be in"):
        check_attack("fgsm", -0.1, "inf")
    with pytest.raises(ValueError, match="deepfool has no inf norm"):
        check_attack("deepfool", 0.1, "inf")
    with pytest.raises(ValueError, match="norm must be"):
        check_attack("fgsm", 0.1, "1")
    with pytest.raises(ValueError, match="uap has no targeted mode"):
        check_attack("uap", 0.1, "inf", target=5)


def test_perturbation_sizes_by_hand():
    x = np.zeros((2, 2, 2, 1))
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.1
    sizes = perturbation_sizes(x, x_adv)
    assert sizes["linf_max"] == pytest.approx(0.1)
    assert sizes["l2_mean"] == pytest.approx(0.05)
    # image 0: MSE 0.01 / 4 -> 10 log10(400) = 26.02 dB; image 1 unchanged: 100 dB
    assert sizes["psnr"] == pytest.approx((10 * np.log10(400) + 100) / 2)


@pytest.fixture(scope="module")
def ham_model(ham_dir):
    config = TrainConfig(data=DataConfig(path=str(ham_dir), image_size=32, per_class_limit=60), epochs=8,
                         batch_size=32, class_weight="balanced")
    set_seed(0)
    data = load_dataset(config.data, progress=False)
    model = create_model("small_cnn", (32, 32, 3), 7)
    x_fit = np.concatenate([data.x["train"], data.x["val"]])
    y_fit = np.concatenate([data.y["train"], data.y["val"]])
    fit(model, x_fit, y_fit, data.x["val"], data.y["val"], config, verbose=0)
    return model, x_fit, y_fit


@pytest.mark.parametrize("method,eps,params", [("fgsm", 4 / 255, {}),
                                               ("uap_fast", 8 / 255, {"max_steps": 60})])
def test_attacks_lower_accuracy_on_real_ham10000(ham_model, method, eps, params):
    model, x, y = ham_model
    clean = (predict_logits(model, x).argmax(axis=1) == y).mean()
    x_adv, _ = craft(method, model, x, eps, "inf", **params)
    attacked = (predict_logits(model, x_adv).argmax(axis=1) == y).mean()
    assert clean > 0.5
    # measured with this seed: fgsm 0.58 -> 0.39, uap_fast 0.58 -> 0.41
    assert attacked < clean - 0.1, (clean, attacked)
