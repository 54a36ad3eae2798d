"""Defenses on synthetic arrays and on a small model trained on real HAM10000 images."""

import numpy as np
import pytest

from medrobust.defenses import DEFENSES, DefendedClassifier, apply_chain, input_chain, load_defended, parse_spec
from medrobust.defenses import transforms
from medrobust.errors import ConfigError
from medrobust.models.zoo import small_cnn


@pytest.fixture
def images():
    # Smooth gradients plus texture: compression changes them, but not beyond recognition.
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 32, dtype=np.float32)
    base = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1)
    return np.clip(base[None] + 0.1 * rng.random((4, 32, 32, 3), dtype=np.float32), 0, 1)


def test_llt_keeps_shape_dtype_range_and_flips(images):
    out = transforms.llt(images, quality=75)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    # The flip: the output is the mirror of the WebP round trip, and the ramp runs the other way.
    np.testing.assert_array_equal(out, transforms.webp(images, 75)[:, :, ::-1, :])
    assert np.abs(out - images[:, :, ::-1, :]).mean() < np.abs(out - images).mean()


def test_llt_output_changes_with_quality(images):
    low, high = transforms.llt(images, quality=5), transforms.llt(images, quality=95)
    assert not np.array_equal(low, high)
    flipped = images[:, :, ::-1, :]
    assert np.abs(high - flipped).mean() < np.abs(low - flipped).mean()  # higher quality, closer


@pytest.mark.parametrize("name", ["llt", "jpeg", "smooth", "squeeze"])
def test_every_transform_keeps_shape_dtype_and_range(images, name):
    fn, defaults, _ = transforms.TRANSFORMS[name]
    out = fn(images, **defaults)
    assert out.shape == images.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert not np.array_equal(out, images)


def test_squeeze_leaves_only_the_bit_depth_levels(images):
    out = transforms.squeeze(images, bits=2)
    assert set(np.unique(np.round(out * 3, 5))) <= {0.0, 1.0, 2.0, 3.0}


@pytest.mark.parametrize("bad", [0, 101, 7.5, "75"])
def test_quality_outside_1_to_100_is_refused(images, bad):
    with pytest.raises(ConfigError, match="quality must be an integer in 1..100"):
        transforms.llt(images, quality=bad)


def test_spec_parts_apply_in_the_documented_order():
    assert parse_spec("llt+retrain") == ("retrain", "llt")
    assert parse_spec("LLT + Detector + distill") == ("distill", "detector", "llt")
    assert parse_spec("jpeg+squeeze+smooth") == ("squeeze", "smooth", "jpeg")
    assert parse_spec("none") == ()
    assert list(DEFENSES) == ["distill", "retrain", "smoothing", "detector", "squeeze", "smooth", "jpeg", "llt"]


@pytest.mark.parametrize("spec, message", [("retrain+blur", "unknown defense 'blur'"),
                                           ("llt+llt", "names a defense twice"),
                                           ("retrain+", "unknown defense ''")])
def test_bad_spec_is_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_chain_applies_transforms_in_order(images):
    chain = input_chain(parse_spec("llt+squeeze"), {"llt": {"quality": 60}, "squeeze": {"bits": 3}})
    assert [name for name, _ in chain] == ["squeeze", "llt"]
    expected = transforms.llt(transforms.squeeze(images, bits=3), quality=60)
    np.testing.assert_array_equal(apply_chain(images, chain), expected)
    # The other order gives other pixels, so the order is really what is applied.
    assert not np.array_equal(expected, transforms.squeeze(transforms.llt(images, quality=60), bits=3))


def test_defended_classifier_predicts_through_its_chain_and_saves(tmp_path, images):
    network = small_cnn((32, 32, 3), 7, widths=(8, 16))
    chain = (("llt", {"quality": 50}),)
    defended = DefendedClassifier(network, chain, info={"spec": "llt"})
    expected = network.predict(transforms.llt(images, 50), verbose=0)
    np.testing.assert_allclose(defended.logits(images), expected, rtol=1e-5, atol=1e-6)
    # The attack view: the same forward pass, and a gradient (BPDA) that flows to the input.
    np.testing.assert_allclose(defended.as_keras().predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    loaded = load_defended(defended.save(tmp_path / "defended"))
    assert loaded.chain == chain and loaded.info == {"spec": "llt"} and loaded.detector is None
    np.testing.assert_allclose(loaded.logits(images), expected, rtol=1e-5, atol=1e-6)


def test_bpda_gradient_reaches_the_input_through_the_flip(images):
    import tensorflow as tf

    network = small_cnn((32, 32, 3), 7, widths=(8, 16))
    model = DefendedClassifier(network, (("llt", {"quality": 75}),)).as_keras()
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x)[:, 0])
    grad = tape.gradient(loss, x).numpy()
    # BPDA: identity through WebP, exact through the flip, i.e. the network's gradient at
    # the transformed image, mirrored back.
    t = tf.constant(transforms.llt(images, 75))
    with tf.GradientTape() as tape:
        tape.watch(t)
        inner = tf.reduce_sum(network(t)[:, 0])
    np.testing.assert_allclose(grad, tape.gradient(inner, t).numpy()[:, :, ::-1, :], rtol=1e-4, atol=1e-7)


def _toy_problem(n=96, size=16, seed=0):
    """Two classes told apart by brightness, with noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.clip(0.3 + 0.4 * y[:, None, None, None] + 0.15 * rng.standard_normal((n, size, size, 3)), 0, 1)
    return x.astype(np.float32), y


def _trained_toy_model(x, y):
    from medrobust.config import TrainConfig
    from medrobust.models.training import fit, set_seed

    set_seed(0)
    model = small_cnn(x.shape[1:], 2, widths=(8, 16))
    fit(model, x, y, x, y, TrainConfig(epochs=4, batch_size=16, patience=0, class_weight="none"))
    return model


def test_distilled_student_keeps_its_predictions_and_saturates_its_softmax():
    import tensorflow as tf

    from medrobust.config import TrainConfig
    from medrobust.defenses.distill import distill

    x, y = _toy_problem()
    teacher = _trained_toy_model(x, y)
    student, history = distill(teacher, x, y, x, y, TrainConfig(batch_size=16, learning_rate=2e-3, class_weight="none"),
                               temperature=20.0, epochs=6)
    assert len(history["loss"]) == 6
    t_logits, s_logits = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    assert np.mean(t_logits.argmax(1) == s_logits.argmax(1)) > 0.9
    # Trained at T = 20 and deployed at T = 1, the student's logits spread much wider.
    spread = lambda z: float(np.mean(np.abs(z[:, 1] - z[:, 0])))  # noqa: E731
    assert spread(s_logits) > 2 * spread(t_logits)  # measured: 2.5x after 36 steps
    assert float(np.mean(np.max(tf.nn.softmax(s_logits), axis=1))) > float(np.mean(np.max(tf.nn.softmax(t_logits), axis=1)))


def test_on_the_fly_adversarial_training_learns_and_changes_the_weights():
    from medrobust.config import TrainConfig
    from medrobust.defenses.retrain import train_on_the_fly

    x, y = _toy_problem()
    model = _trained_toy_model(x, y)
    before = [w.copy() for w in model.get_weights()]
    history = train_on_the_fly(model, x, y, TrainConfig(batch_size=16, learning_rate=1e-3, class_weight="none"),
                               method="pgd", eps=8 / 255, epochs=3, pgd_steps=2)
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with pytest.raises(ConfigError, match="supports fgsm and pgd"):
        train_on_the_fly(model, x, y, TrainConfig(), method="uap", epochs=1)


def test_distill_builder_reports_through_its_hooks_and_leaves_its_input_alone():
    from types import SimpleNamespace

    from medrobust.config import DefendConfig
    from medrobust.defenses import DEFENSES, Hooks

    class Recorder(Hooks):
        def __init__(self):
            self.epochs, self.histories = [], {}

        def on_epoch(self, part, epoch, logs):
            self.epochs.append((part, epoch, sorted(logs)))

        def on_history(self, part, history):
            self.histories[part] = history

    x, y = _toy_problem(n=48)
    data = SimpleNamespace(x={"train": x, "val": x}, y={"train": y, "val": y})
    teacher = _trained_toy_model(x, y)
    before = DefendedClassifier(teacher, info={"spec": "distill"})
    weights = [w.copy() for w in teacher.get_weights()]
    hooks = Recorder()
    after = DEFENSES["distill"].build(before, data, DefendConfig(defense="distill", distill_epochs=2, batch_size=16),
                                      hooks)
    assert after is not before and after.network is not teacher and after.info == before.info
    assert all(np.array_equal(a, b) for a, b in zip(weights, teacher.get_weights()))
    assert [(part, epoch) for part, epoch, _ in hooks.epochs] == [("distill", 0), ("distill", 1)]
    assert "loss" in hooks.epochs[0][2] and len(hooks.histories["distill"]["loss"]) == 2
