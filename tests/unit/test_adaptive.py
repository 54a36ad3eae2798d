"""The adaptive suite's attacks: APGD-CE and AutoAttack (ART's), and PGD against a classifier
and its detector at once, on a tiny network trained on separable synthetic images."""

import inspect

import keras
import numpy as np
import pytest

import medrobust.attacks.art_reference as art_reference
import medrobust.attacks.gradient as gradient
from medrobust.attacks import ATTACKS, check_attack, craft
from medrobust.evaluation import adaptive
from medrobust.evaluation.adaptive import eot_note, joint_pgd
from medrobust.defenses.defended import DefendedClassifier, adversarial_probability
from medrobust.defenses.transforms import TRANSFORMS, apply_chain
from medrobust.errors import ConfigError
from medrobust.models.training import predict_logits, set_seed
from medrobust.models.zoo import small_cnn

SIZE, K = 8, 4
EPS = 16 / 255  # the synthetic classes differ by 0.25 over a quadrant: PGD breaks ~3/4 of them at 16/255


def synthetic(n, seed):
    """n grey 8x8 images with noise; class k (of 4) is the one whose quadrant k is brighter."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    x = 0.35 + 0.1 * rng.standard_normal((n, SIZE, SIZE, 3))
    half = SIZE // 2
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[i, row * half:(row + 1) * half, col * half:(col + 1) * half] += 0.25
    return np.clip(x, 0, 1).astype(np.float32), y


def tiny_net(n_classes, learning_rate, seed):
    set_seed(seed)
    model = small_cnn((SIZE, SIZE, 3), n_classes, widths=(8, 16), dropout=0.0)
    model.compile(keras.optimizers.Adam(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def trained():
    """A 1.5 k-parameter classifier, 100 % accurate on clean held-out images."""
    x, y = synthetic(256, 0)
    model = tiny_net(K, 1e-2, 0)
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    x_test, y_test = synthetic(64, 100)
    assert (predict_logits(model, x_test).argmax(axis=1) == y_test).mean() == 1.0
    return model, x, y, x_test, y_test


@pytest.fixture(scope="module")
def detector(trained):
    """A detector trained on the training images (clean, label 0) and their PGD twins (label 1),
    for 25 epochs: after 10 it flagged 0.03 of clean images with oneDNN's default kernels and
    0.31 with oneDNN limited to AVX2, a detector still at the edge of what it learns."""
    model, x, _, _, _ = trained
    x_adv, _ = craft("pgd", model, x, EPS, steps=10, seed=0)
    det = tiny_net(2, 3e-3, 1)
    det.fit(np.concatenate([x, x_adv]), np.r_[np.zeros(len(x)), np.ones(len(x))], epochs=25, batch_size=32,
            verbose=0, shuffle=True)
    return det


def accuracy(model, x, y):
    return float((predict_logits(model, x).argmax(axis=1) == y).mean())


def sizes(x, x_adv, norm):
    delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    return np.abs(delta).max(axis=1) if norm == "inf" else np.linalg.norm(delta, axis=1)


# --- APGD and AutoAttack ------------------------------------------------------------------

def test_registry_specs_of_apgd_and_autoattack():
    apgd, auto, art = ATTACKS["apgd"], ATTACKS["autoattack"], ATTACKS["autoattack_art"]
    assert apgd.params == ("steps", "loss", "restarts", "step_size", "batch_size", "seed")
    assert auto.params == ("steps", "n_targets", "queries", "batch_size", "seed")
    assert art.params == ("batch_size", "seed")
    assert apgd.norms == auto.norms == ("inf",) and art.norms == ("inf", "2")
    assert apgd.targeted and not auto.targeted and not art.targeted
    defaults = {n: p.default for n, p in inspect.signature(auto.function).parameters.items()}
    # RobustBench's standard settings
    assert (defaults["steps"], defaults["n_targets"], defaults["queries"]) == (100, 9, 5000)
    assert check_attack("apgd", EPS, "inf", target=3, params=("steps", "restarts")) == "inf"
    with pytest.raises(ConfigError, match="autoattack has no targeted mode"):
        check_attack("autoattack", EPS, "inf", target=3)
    with pytest.raises(ConfigError, match="attack autoattack has no 2 norm"):
        check_attack("autoattack", EPS, "2")
    with pytest.raises(ConfigError, match=r"takes no parameter 'nb_random_init'"):
        check_attack("apgd", EPS, "inf", params=("nb_random_init",))  # ART's name, not ours


@pytest.mark.parametrize("method,norm,eps,params", [
    ("apgd", "inf", EPS, {}), ("apgd", "inf", EPS, {"loss": "dlr"}), ("apgd_art", "2", 1.0, {}),
    # 24/255: APGD-CE, the first member, breaks every image, so the slow members have nothing left to do
    ("autoattack", "inf", 24 / 255, {}), ("autoattack_art", "2", 1.0, {})])
def test_keep_the_budget_and_box_and_lower_accuracy(trained, method, norm, eps, params):
    model, _, _, x, y = trained
    x, y = x[:32].copy(), y[:32].copy()
    if method.startswith("apgd"):  # images at the box edges: the clipping must hold there too (AutoAttack
        x[0] = 0.0                 # would spend minutes of Square queries on these flat images, which resist)
        x[1] = 1.0
        y[:2] = predict_logits(model, x[:2]).argmax(axis=1)
    x_adv, _ = craft(method, model, x, eps, norm, y=y, **params)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert sizes(x, x_adv, norm).max() <= eps + 1e-6
    clean, attacked = accuracy(model, x, y), accuracy(model, x_adv, y)
    # measured: apgd 1.00 -> 0.28 (inf) and 0.06 (L2); autoattack 1.00 -> 0.00
    assert attacked <= clean - 0.5, (clean, attacked)


def test_apgd_random_starts_follow_the_seed(trained):
    model, _, _, x, _ = trained
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, _ = craft("apgd", model, x[:24], EPS, steps=5, seed=1)
    b, _ = craft("apgd", model, x[:24], EPS, steps=5, seed=1)
    c, _ = craft("apgd", model, x[:24], EPS, steps=5, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the caller's generator is left alone


def test_targeted_apgd_moves_images_to_the_target(trained):
    model, _, _, x, y = trained
    others = x[y != 2][:24]
    x_adv, _ = craft("apgd", model, others, 24 / 255, target=2, steps=10)
    hit = (predict_logits(model, x_adv).argmax(axis=1) == 2).mean()
    assert hit >= 0.8, hit  # measured: 1.0


def test_autoattack_runs_every_member_of_arts_ensemble_on_our_classifier(trained, monkeypatch):
    """At 16/255 some images resist APGD-CE, so APGD-DLR, DeepFool and Square run too (each
    with a small budget here: ART's 100 x 5 APGD steps and 5 x 5000 Square queries take minutes)."""
    class SmallAutoAttack(art_reference.AutoAttack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            apgd_ce, apgd_dlr, deepfool, square = self.attacks
            apgd_ce.set_params(max_iter=5, nb_random_init=1)
            apgd_dlr.set_params(max_iter=5, nb_random_init=1)
            deepfool.set_params(max_iter=5)
            square.set_params(max_iter=40, nb_restarts=1)

    ran = []

    def recording(x, y, robust, attack, *args, **kwargs):
        ran.append((type(attack).__name__, getattr(attack, "loss_type", None), int(robust.sum())))
        return run_attack(x, y, robust, attack, *args, **kwargs)

    run_attack = art_reference.run_attack
    monkeypatch.setattr(art_reference, "AutoAttack", SmallAutoAttack)
    monkeypatch.setattr(art_reference, "run_attack", recording)
    model, _, _, x, y = trained
    x_adv, _ = craft("autoattack_art", model, x, EPS, "inf", y=y)
    assert [(name, loss) for name, loss, _ in ran] == [
        ("AutoProjectedGradientDescent", "cross_entropy"), ("AutoProjectedGradientDescent", "difference_logits_ratio"),
        ("DeepFool", None), ("SquareAttack", None)]
    assert ran[0][2] == len(x) and ran[-1][2] > 0
    assert sizes(x, x_adv, "inf").max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    # each member attacks only what the previous ones left standing, and successes are kept
    assert accuracy(model, x_adv, y) <= 1 - (len(x) - ran[-1][2]) / len(x) + 1e-9


def test_autoattack_refuses_a_target_when_called_directly(trained):
    model, _, _, x, y = trained
    with pytest.raises(ConfigError, match="autoattack has no targeted mode"):
        gradient.autoattack(model, x[:2], y=y[:2], eps=EPS, target=1)
    with pytest.raises(ConfigError, match="autoattack_art has no targeted mode"):
        art_reference.autoattack_art(model, x[:2], y=y[:2], eps=EPS, target=1)


# --- PGD against classifier and detector --------------------------------------------------

def fooled_and_passed(model, det, x, x_adv):
    fooled = predict_logits(model, x_adv).argmax(axis=1) != predict_logits(model, x).argmax(axis=1)
    passed = adversarial_probability(det, x_adv) < 0.5
    return fooled, passed


def test_joint_attack_gets_more_adversarial_images_past_the_detector_than_pgd(trained, detector):
    model, _, _, x, _ = trained
    assert (adversarial_probability(detector, x) >= 0.5).mean() <= 0.25  # measured 0.03: it passes clean images
    pgd_x, _ = craft("pgd", model, x, EPS, steps=20, seed=1)
    fooled, passed = fooled_and_passed(model, detector, x, pgd_x)
    assert fooled.mean() >= 0.5 and passed.mean() <= 0.35  # measured 0.77 and 0.20: PGD fools it, and is caught
    joint_x = joint_pgd(model, detector, x, eps=EPS, steps=20, seed=1)
    assert sizes(x, joint_x, "inf").max() <= EPS + 1e-6 and 0 <= joint_x.min() and joint_x.max() <= 1
    j_fooled, j_passed = fooled_and_passed(model, detector, x, joint_x)
    # measured: fooled and past the detector, pgd 0.12, joint 0.75 of 64 images (over four data /
    # detector seeds of this setup, joint - pgd was 0.42 to 0.60)
    assert (j_fooled & j_passed).mean() >= (fooled & passed).mean() + 0.3
    assert (j_fooled & j_passed).mean() >= 0.4  # still a good share of the classifier fooled


def test_the_detector_term_is_what_gets_the_images_past_it(trained, detector):
    """detector_weight 0 leaves the classifier's loss only, and the detector catches most."""
    model, _, _, x, _ = trained
    results = {}
    for weight in (0.0, 1.0):
        fooled, passed = fooled_and_passed(model, detector, x, joint_pgd(model, detector, x, eps=EPS, steps=20, seed=1,
                                                                         detector_weight=weight))
        results[weight] = (fooled & passed).mean()
    assert results[1.0] >= results[0.0] + 0.3, results  # measured: 0.30 -> 0.75


@pytest.mark.parametrize("norm,eps", [("inf", EPS), ("2", 0.5)])
def test_joint_pgd_keeps_the_budget_and_follows_the_seed(trained, detector, norm, eps):
    model, _, _, x, _ = trained
    x = x[:16].copy()
    x[0] = 0.0
    x[1] = 1.0
    a = joint_pgd(model, detector, x, eps=eps, norm=norm, steps=3, seed=4)
    b = joint_pgd(model, detector, x, eps=eps, norm=norm, steps=3, seed=4, batch_size=5)
    c = joint_pgd(model, detector, x, eps=eps, norm=norm, steps=3, seed=5)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert 0 <= a.min() and a.max() <= 1 and sizes(x, a, norm).max() <= eps + 1e-6
    np.testing.assert_allclose(a, b, atol=1e-6)  # the random start does not depend on the batches
    assert np.abs(a - c).max() > 1e-3
    np.testing.assert_array_equal(joint_pgd(model, detector, x, eps=0.0, norm=norm), x)


def test_joint_pgd_attacks_a_defended_model_through_its_bpda_view(trained, detector):
    model, _, _, x, _ = trained
    defended = DefendedClassifier(model, (("squeeze", {"bits": 5}),), detector)
    x = x[:24]
    x_adv = joint_pgd(defended.as_keras(), detector, x, eps=24 / 255, steps=10, seed=0)
    assert sizes(x, x_adv, "inf").max() <= 24 / 255 + 1e-6
    pgd_x, _ = craft("pgd", defended.as_keras(), x, 24 / 255, steps=10, seed=0)
    shares = []
    for images in (pgd_x, x_adv):
        fooled = defended.logits(images).argmax(axis=1) != defended.logits(x).argmax(axis=1)
        shares.append((fooled & ~defended.rejected(images)).mean())
    assert shares[1] >= max(0.4, shares[0] + 0.3), shares  # measured: pgd 0.04, joint 0.92


def test_joint_pgd_refuses_bad_settings(trained, detector):
    model, _, _, x, _ = trained
    with pytest.raises(ConfigError, match="threshold must be in"):
        joint_pgd(model, detector, x[:2], eps=EPS, threshold=1.0)
    with pytest.raises(ConfigError, match="norm must be"):
        joint_pgd(model, detector, x[:2], eps=EPS, norm="1")


# --- EOT ----------------------------------------------------------------------------------

def test_eot_note_says_our_transformations_are_deterministic(monkeypatch):
    note = eot_note((("llt", {"quality": 75}), ("jpeg", {"quality": 75})))
    assert "(llt, jpeg) are deterministic" in note and "one sample" in note and "Athalye" in note
    assert "does not apply" in eot_note(())
    with pytest.raises(ConfigError, match="unknown input transformation 'blur'"):
        eot_note((("blur", {}),))
    monkeypatch.setattr(adaptive, "RANDOM_TRANSFORMS", frozenset({"jpeg"}))
    assert "jpeg are random" in eot_note((("squeeze", {}), ("jpeg", {})))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transformation_not_declared_random_is_deterministic(name):
    """eot_note relies on RANDOM_TRANSFORMS naming every random transformation."""
    if name in adaptive.RANDOM_TRANSFORMS:
        pytest.skip(f"{name} is declared random")
    x = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    chain = ((name, TRANSFORMS[name][1]),)
    np.random.seed(1)
    first = apply_chain(x, chain)
    np.random.seed(2)
    np.testing.assert_array_equal(apply_chain(x, chain), first)
