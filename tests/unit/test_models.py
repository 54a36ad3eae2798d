import numpy as np
import pytest
import keras

from medrobust.config import DataConfig, TrainConfig
from medrobust.models import create_model
from medrobust.models.zoo import SCRATCH_BN_MOMENTUM, _backbone_classifier
from medrobust.models.training import augment_batch, class_weights, fit, set_seed


@pytest.mark.parametrize("arch,size", [("small_cnn", 32), ("resnet50", 32), ("inception_v3", 75), ("mobilenet_v2", 32),
                                       ("small_resnet", 32)])
def test_each_architecture_outputs_logits(arch, size):
    model = create_model(arch, (size, size, 3), 7)
    x = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, 7)
    # logits, not probabilities: rows need not sum to one and may be negative
    assert not np.allclose(out.sum(axis=1), 1.0)
    assert model.layers[-1].get_config()["activation"] == "linear"


def test_width_scales_small_cnn_and_dropout_reaches_the_head():
    narrow, wide = (create_model("small_cnn", (32, 32, 3), 7, width=w, dropout=0.1) for w in (0.5, 1.5))
    assert narrow.get_layer("stage1_conv").filters == 16 and wide.get_layer("stage4_conv").filters == 384
    assert narrow.get_layer("dropout").rate == 0.1
    assert wide.count_params() > 4 * narrow.count_params()
    mobile = create_model("mobilenet_v2", (32, 32, 3), 7, width=0.35)
    assert mobile.count_params() < create_model("mobilenet_v2", (32, 32, 3), 7).count_params() / 3
    assert create_model("small_resnet", (32, 32, 3), 7, width=0.5).get_layer("stage3_conv2").filters == 64
    with pytest.raises(ValueError, match="width 2 is a setting of small_cnn, mobilenet_v2, small_resnet; resnet50 has a fixed"):
        create_model("resnet50", (32, 32, 3), 7, width=2)


def test_weight_decay_shrinks_the_weights():
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 16, 16, 3), dtype=np.float32), rng.integers(0, 7, 64)
    norms = {}
    for decay in (0.0, 20.0):  # AdamW decays by weight_decay * learning rate per step
        set_seed(0)
        model = create_model("small_cnn", (16, 16, 3), 7)
        fit(model, x, y, x[:16], y[:16], TrainConfig(data=DataConfig(), epochs=3, batch_size=16, patience=0,
                                                     augment=False, weight_decay=decay))
        norms[decay] = float(np.sqrt(sum(np.sum(np.square(w)) for w in model.get_layer("logits").get_weights())))
    assert norms[20.0] < 0.97 * norms[0.0]


def test_the_config_knows_every_architecture():
    from medrobust.config import ARCHITECTURE_NAMES
    from medrobust.models import ARCHITECTURES
    assert ARCHITECTURE_NAMES == tuple(ARCHITECTURES)
    with pytest.raises(ValueError, match="arch must be one of small_cnn, resnet50, inception_v3, mobilenet_v2, small_resnet, got 'vgg'"):
        TrainConfig(arch="vgg")


def test_unknown_arch_and_bad_size_are_named():
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        create_model("vgg", (32, 32, 3), 7)
    with pytest.raises(ValueError, match="inception_v3 needs images of at least 75"):
        create_model("inception_v3", (64, 64, 3), 7)
    with pytest.raises(ValueError, match="local ImageNet weights"):
        create_model("resnet50", (32, 32, 3), 7, weights="imagenet")


def test_resnet50_preprocessing_matches_keras_applications():
    model = create_model("resnet50", (32, 32, 3), 7)
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    ours = np.asarray(model.get_layer("imagenet_preprocess")(x))
    theirs = keras.applications.resnet50.preprocess_input(x * 255.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_local_weights_file_is_loaded_into_the_backbone(tmp_path):
    donor = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    donor.save_weights(path)
    model = create_model("resnet50", (32, 32, 3), 7, weights=str(path))
    for ours, theirs in zip(model.get_layer("backbone").get_weights()[:5], donor.get_weights()[:5]):
        np.testing.assert_array_equal(ours, theirs)


def _bn_momenta(model):
    return {layer.momentum for layer in model.get_layer("backbone").layers
            if isinstance(layer, keras.layers.BatchNormalization)}


def test_a_backbone_from_scratch_moves_its_batchnorm_statistics_fast(tmp_path):
    """keras.applications' momentum 0.999 (MobileNetV2) left a CPU-scale training predicting one
    class at inference; from scratch every BatchNorm takes 0.9, kept through a save and load."""
    model = create_model("mobilenet_v2", (32, 32, 3), 7, width=0.35)
    assert _bn_momenta(model) == {SCRATCH_BN_MOMENTUM}
    model.save(tmp_path / "m.keras")
    assert _bn_momenta(keras.models.load_model(tmp_path / "m.keras")) == {SCRATCH_BN_MOMENTUM}
    donor = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    donor.save_weights(tmp_path / "r.weights.h5")
    pretrained = create_model("resnet50", (32, 32, 3), 7, weights=str(tmp_path / "r.weights.h5"))
    assert _bn_momenta(pretrained) == {0.99}  # ImageNet statistics are kept (and frozen: zoo.py)


def test_class_weights_balance_the_classes():
    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    w = class_weights(y, 4, "balanced")
    assert w[3] == 0.0  # absent class
    totals = [w[k] * (y == k).sum() for k in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)
    assert class_weights(y, 4, "sqrt")[2] == pytest.approx(np.sqrt(w[2]))


def test_augmentation_only_flips_and_rotates():
    import tensorflow as tf

    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    out = np.asarray(augment_batch(tf.constant(x), tf.constant([0, 1], tf.int64)))
    for before, after in zip(x, out):
        dihedral = [np.rot90(v, k) for v in (before, before[:, ::-1]) for k in range(4)]
        assert any(np.array_equal(after, d) for d in dihedral)
    assert not np.array_equal(out, x)


def test_training_is_deterministic_by_seed():
    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 3), dtype=np.float32)
    y = np.arange(64) % 7
    config = TrainConfig(data=DataConfig(image_size=16), epochs=2, batch_size=16, seed=5)

    def train(seed):
        set_seed(seed)
        model = create_model("small_cnn", (16, 16, 3), 7)
        fit(model, x, y, x[:14], y[:14], config)
        return model.get_weights()

    a, b, c = train(5), train(5), train(6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_fit_traces_its_train_step_once():
    # A variable made in a tf.function's first trace (Keras builds the compiled metrics there
    # unless a distribution strategy is set) makes TensorFlow trace it again: 0.7 s a fit.
    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 3), dtype=np.float32)
    y = np.arange(32) % 7
    model = create_model("small_cnn", (16, 16, 3), 7)
    traced = []
    step = model.train_step

    def counted(data):
        traced.append(1)
        return step(data)

    model.train_step = counted
    history = fit(model, x, y, x[:14], y[:14], TrainConfig(data=DataConfig(image_size=16), epochs=2, batch_size=16))
    assert len(history["loss"]) == 2 and len(traced) == 1


def _tiny_backbone(include_top=False, weights=None, input_shape=None):
    """A keras.applications-shaped base (conv, BatchNorm, ReLU twice), to load `weights` as theirs do."""
    inputs = keras.Input(input_shape)
    x = inputs
    for width in (8, 16):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same")(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    base = keras.Model(inputs, x)
    if weights:
        base.load_weights(weights)
    return base


def test_transfer_learning_freezes_then_fine_tunes(tmp_path):
    # Through zoo's own wrapper of every keras.applications backbone (test_local_weights_file_...
    # checks that a real one takes the file); a tiny base keeps the two traced training phases
    # cheap (MobileNetV2 at 0.35 spent 25 s of the inner loop tracing them).
    donor = _tiny_backbone(input_shape=(32, 32, 3))
    path = tmp_path / "tiny_notop.weights.h5"
    donor.save_weights(path)
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 32, 3), dtype=np.float32)
    y = np.arange(32) % 7
    set_seed(0)
    model = _backbone_classifier(_tiny_backbone, lambda v: v, 8, (32, 32, 3), 7, str(path), 0.3, "tiny")
    head_before = model.get_layer("logits").get_weights()[0].copy()
    config = TrainConfig(data=DataConfig(image_size=32), weights=str(path), epochs=1, head_epochs=1, batch_size=16)
    seen = []

    def snapshot(epoch, logs):
        seen.append([np.array(v) for v in model.get_layer("backbone").weights])

    history = fit(model, x, y, x[:14], y[:14], config, on_epoch=snapshot)
    assert history["phase"] == ["head", "fine_tune"]
    donor_weights = [np.array(v) for v in donor.weights]  # the same layers in the same order
    assert all(np.array_equal(a, b) for a, b in zip(seen[0], donor_weights, strict=True))  # frozen in the head phase
    moved = {v.path.split("/")[-1] for v, a, b in zip(donor.weights, seen[1], donor_weights) if not np.array_equal(a, b)}
    # then fine-tuned, but its BatchNorm stays as pretrained, statistics included (zoo.py): Keras
    # 3's fit overrides the training=False the backbone is called with (keras-team/keras#20285)
    assert moved == {"kernel", "bias"}, moved
    assert not np.array_equal(model.get_layer("logits").get_weights()[0], head_before)
    # and in any later fit, given no weights file (defend's retraining), also of a version whose
    # BatchNorm was left trainable (fine-tuned before this fix): the model's own momentum says its
    # statistics are pretrained (zoo.pretrained_batchnorm)
    fresh = _backbone_classifier(_tiny_backbone, lambda v: v, 8, (32, 32, 3), 7, str(path), 0.3, "tiny")
    fit(fresh, x, y, x[:14], y[:14], TrainConfig(data=DataConfig(image_size=32), epochs=1, batch_size=16))
    moved = {v.path.split("/")[-1] for v, b in zip(fresh.get_layer("backbone").weights, donor_weights)
             if not np.array_equal(np.array(v), b)}
    assert moved == {"kernel", "bias"}, moved
