"""Attacks keep their budget, a UAP is shared, and FGSM / uap_fast hurt a real HAM10000 model."""

import inspect
import random
from dataclasses import fields

import numpy as np
import pytest

from medrobust.attacks import ATTACKS, AttackSpec, check_attack, craft, perturbation_sizes
from medrobust.attacks.minimal import deepfool
from medrobust.config import AttackConfig, DataConfig, TrainConfig
from medrobust.errors import ConfigError
from medrobust.data import load_dataset
from medrobust.models import create_model
from medrobust.models.training import fit, predict_logits, set_seed

FAST_PARAMS = {"pgd": {"steps": 3}, "pgd_art": {"steps": 3}, "cw": {"steps": 2}, "cw_pgd": {"steps": 3},
               "deepfool": {"steps": 3}, "uap": {"uap_max_iter": 1}, "uap_fast": {"max_steps": 5, "eval_every": 5},
               "apgd": {"steps": 10}, "apgd_art": {"steps": 10}, "apgd_t": {"steps": 5, "n_targets": 2},
               "square": {"queries": 20}, "square_art": {"queries": 20}, "autoattack": {"steps": 5, "n_targets": 2, "queries": 20},
               "health": {"steps": 5}}


@pytest.fixture(scope="module")
def tiny():
    set_seed(0)
    model = create_model("small_cnn", (16, 16, 3), 7)
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    x[0] = 0.0  # images at the box edges: clipping must hold there too
    x[1] = 1.0
    return model, x


@pytest.mark.parametrize("method,norm", [(m, n) for m in sorted(ATTACKS) for n in ATTACKS[m].norms])
def test_every_attack_keeps_budget_and_box(tiny, method, norm):
    model, x = tiny
    # L2 1.0: a budget the tiny network gives way to at once (at 0.5 ART's AutoAttack went on to
    # its later members: 16 s of the inner loop against 2.3); the budget must hold either way
    eps = 8 / 255 if norm == "inf" else 1.0
    x_adv, perturbation = craft(method, model, x, eps, norm, **FAST_PARAMS.get(method, {}))
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-6
    if ATTACKS[method].universal:
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
    with pytest.raises(ConfigError, match="unknown attack method 'bim'"):
        check_attack("bim", 0.1, "inf")
    with pytest.raises(ConfigError, match=r"eps must be in \[0, 1\]"):
        check_attack("fgsm", 2.0, "inf")
    with pytest.raises(ConfigError, match="eps must be in"):
        check_attack("fgsm", -0.1, "inf")
    with pytest.raises(ConfigError, match="eps must be a number"):
        check_attack("fgsm", "big", "inf")
    with pytest.raises(ConfigError, match="deepfool has no inf norm; it supports 2"):
        check_attack("deepfool", 0.1, "inf")
    with pytest.raises(ConfigError, match="norm must be 'inf' or '2', got '1'"):
        check_attack("fgsm", 0.1, "1")
    with pytest.raises(ConfigError, match="uap has no targeted mode"):
        check_attack("uap", 0.1, "inf", target=5)
    assert check_attack("pgd_art", 0.1, "L2", params=("steps", "random_start")) == "2"


def test_unknown_method_and_bad_norm_are_refused_by_craft_before_any_work():
    x = np.zeros((2, 8, 8, 3), np.float32)
    # model=None: any work on it would fail with another error than the one expected
    with pytest.raises(ConfigError, match="unknown attack method 'fgsn'; expected one of fgsm, "):
        craft("fgsn", None, x, 0.1)
    with pytest.raises(ConfigError, match="norm must be"):
        craft("pgd", None, x, 0.1, "l1")
    with pytest.raises(ConfigError, match="attack pgd has no 2 norm; it supports inf"):
        craft("pgd", None, x, 0.1, "2")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_params_are_the_functions_signature(name):
    spec = ATTACKS[name]
    signature = list(inspect.signature(spec.function).parameters)
    assert signature[:3] == ["model", "x", "y"]  # every attack is given the true labels
    assert spec.params == tuple(p for p in signature if p not in ("model", "x", "y", "eps", "norm", "target"))
    assert {"eps", "norm", "target"} <= set(signature)
    assert all(p.kind is not p.VAR_KEYWORD for p in inspect.signature(spec.function).parameters.values())
    assert spec.name == name and spec.summary and "\n" not in spec.summary
    assert set(spec.norms) <= {"inf", "2"}


def test_params_are_named_as_the_attack_settings():
    """A parameter is an AttackConfig field of the same name, or one of the few kept out of it."""
    settings = {f.name for f in fields(AttackConfig)}
    own = {p for spec in ATTACKS.values() for p in spec.params} - settings
    assert own == {"search_steps", "attacker_eps", "eval_every", "health_map"}  # health_map: the data's
    # seed only where an attack draws random numbers
    assert sorted(n for n, spec in ATTACKS.items() if "seed" in spec.params) == [
        "apgd", "apgd_art", "apgd_t", "autoattack", "autoattack_art", "cw_pgd", "health", "pgd", "pgd_art", "square",
        "square_art", "uap", "uap_fast"]


def test_a_parameter_the_attack_lacks_is_refused_naming_it():
    x = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(ConfigError, match=r"^attack fgsm takes no parameter 'steps'; it accepts batch_size$"):
        craft("fgsm", None, x, 2 / 255, steps=3)  # model=None: refused before any work
    with pytest.raises(ConfigError, match=r"attack pgd takes no parameter 'stepz'; it accepts steps, step_size, "
                                          r"random_start, restarts, batch_size, seed \(did you mean 'stepz' -> 'steps'\?\)"):
        check_attack("pgd", 2 / 255, "inf", params=("stepz",))
    with pytest.raises(ConfigError, match="attack uap takes no parameters 'delta', 'max_iter'"):
        craft("uap", None, x, 2 / 255, delta=0.2, max_iter=5)  # the names before the rename
    with pytest.raises(ConfigError, match="attack fgsm takes no parameter 'seed'"):
        check_attack("fgsm", 2 / 255, "inf", params={"seed": 1})  # a method parameter, not craft's seed


def test_seed_and_batch_size_go_only_to_the_attacks_that_take_them(tiny):
    model, x = tiny
    plain, _ = craft("fgsm", model, x, 4 / 255)
    knobs, _ = craft("fgsm", model, x, 4 / 255, seed=7, batch_size=3)  # fgsm has no seed: not an error
    np.testing.assert_allclose(knobs, plain, atol=1e-6)


def test_pgd_random_start_follows_the_seed(tiny):
    model, x = tiny
    params = {"steps": 2, "random_start": True}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, _ = craft("pgd", model, x, 8 / 255, seed=1, **params)
    b, _ = craft("pgd", model, x, 8 / 255, seed=1, **params)
    c, _ = craft("pgd", model, x, 8 / 255, seed=2, **params)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the caller's generator is left alone


def test_uap_image_order_follows_the_seed(tiny):
    """ART's UAP visits the images in an order from Python's `random`: the seed fixes it."""
    model, x = tiny
    random.seed(5)
    before = random.getstate()
    runs = [craft("uap", model, x, 8 / 255, seed=s, uap_max_iter=1, uap_delta=0.01)[1] for s in (1, 1, 2, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    # two orders can give one perturbation (measured: seeds 0-5 give 5 distinct ones), not all four
    assert len({v.tobytes() for v in runs[1:]}) > 1
    assert random.getstate() == before


def test_untargeted_attacks_refuse_a_target_and_other_norms_when_called_directly(tiny):
    model, x = tiny
    with pytest.raises(ConfigError, match="deepfool has no inf norm"):
        deepfool(model, x, y=np.zeros(len(x), int), eps=0.5, norm="inf")
    with pytest.raises(ConfigError, match="deepfool has no targeted mode"):
        deepfool(model, x, y=np.zeros(len(x), int), eps=0.5, norm="2", target=3)
    with pytest.raises(ConfigError, match="uap_attacker must be one of fgsm, pgd, deepfool, got 'cw'"):
        craft("uap", model, x, 8 / 255, uap_attacker="cw")


def test_an_attack_is_one_function_and_one_spec(tiny, monkeypatch):
    def noise(model, x, *, y, eps, norm, target):
        return x + 2 * eps  # past the budget: craft projects it back

    monkeypatch.setitem(ATTACKS, "noise", AttackSpec("noise", noise, ("inf",), False, False, "a test"))
    model, x = tiny
    assert ATTACKS["noise"].params == ()
    x_adv, _ = craft("noise", model, x, 0.1)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    with pytest.raises(ConfigError, match="attack noise takes no parameter 'steps'; it accepts none"):
        craft("noise", model, x, 0.1, steps=2)

    def loose(model, x, *, y, eps, norm, target, **_):
        return x

    with pytest.raises(TypeError, match="name every parameter"):
        AttackSpec("loose", loose, ("inf",), False, False, "a catch-all")


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
    fit(model, x_fit, y_fit, data.x["val"], data.y["val"], config)
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


@pytest.mark.parametrize("method", ["fgsm", "pgd", "uap_fast"])
def test_a_zero_budget_leaves_the_images_as_they_are(method):
    model = create_model("small_cnn", (8, 8, 3), 7)
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    x_adv, _ = craft(method, model, x, 0.0)
    np.testing.assert_array_equal(x_adv, x)


def test_cw_pgd_breaks_at_least_what_pgd_breaks_and_follows_its_target(ham_model):
    model, x, y = ham_model
    x, y = x[:200], y[:200]
    own = predict_logits(model, x).argmax(axis=1)
    flipped, adversarial = {}, {}
    for method in ("pgd", "cw_pgd"):
        adversarial[method], _ = craft(method, model, x, 2 / 255, "inf", seed=1, steps=10)
        flipped[method] = (predict_logits(model, adversarial[method]).argmax(axis=1) != own).mean()
    # the margin loss does not saturate: as strong as PGD on the cross-entropy, within noise
    assert flipped["cw_pgd"] >= flipped["pgd"] - 0.03 and flipped["cw_pgd"] > 0.3, flipped
    again, _ = craft("cw_pgd", model, x, 2 / 255, "inf", seed=1, steps=10)
    other, _ = craft("cw_pgd", model, x, 2 / 255, "inf", seed=2, steps=10)
    np.testing.assert_array_equal(again, adversarial["cw_pgd"])
    assert not np.array_equal(again, other)  # the random start follows the seed
    to_nv, _ = craft("cw_pgd", model, x, 8 / 255, "inf", target=5, steps=10)
    share, before = (predict_logits(model, to_nv).argmax(axis=1) == 5).mean(), (own == 5).mean()
    # it follows its target: far more images called nv than clean (0.59 against 0.07 here, 0.49 on a
    # CPU with other kernels; a fixed 0.5 sat at that edge)
    assert share > before + 0.25, (share, before)
