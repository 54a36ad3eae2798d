"""The model zoo: a name picks a factory (as timm's create_model does).

Every network takes float32 images in [0, 1], NHWC, and outputs logits (no softmax), so attacks
see the same input scale as the data and the loss stays numerically stable. Any input
normalisation a backbone expects is a frozen layer inside the network.
"""

from collections.abc import Sequence

import numpy as np
import keras
from keras import layers

from ..errors import ConfigError

# Caffe-style ImageNet normalisation of keras.applications.resnet50: BGR order, mean subtracted.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# From scratch, keras.applications' BatchNorm momentum (0.99; MobileNetV2's 0.999) leaves the
# moving statistics near their initial values for the few hundred steps of a CPU-scale training,
# so the network predicts one class at inference while it learns in training mode (seen:
# mobilenet_v2 at 64 px on 1,259 images, validation stuck at 1/7 macro recall). small_cnn's 0.9.
SCRATCH_BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


SMALL_CNN_WIDTHS = (32, 64, 128, 256)


def small_cnn(input_shape: tuple[int, ...], n_classes: int, weights: str | None = "none",
              widths: tuple[int, ...] = SMALL_CNN_WIDTHS, dropout: float = 0.3) -> "keras.Model":
    """Four conv-BN-ReLU stages with max pooling, global average pooling, dropout, dense logits.

    Sized for CPU: about 0.4 M parameters, ~120 training images/s at 64 px on 2 cores.
    """
    if weights not in (None, "none"):
        raise ConfigError("small_cnn has no pretrained weights; use weights='none'")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, width in enumerate(widths):
        x = _conv_bn_relu(x, width, f"stage{i + 1}")
        if i < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"stage{i + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


SMALL_RESNET_WIDTHS = (32, 64, 128)


def _residual_block(x, filters, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:  # a projection where the shape changes
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"{name}_bn2")(y)
    return layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([shortcut, y]))


def small_resnet(input_shape: tuple[int, ...], n_classes: int, weights: str | None = "none",
                 widths: tuple[int, ...] = SMALL_RESNET_WIDTHS, dropout: float = 0.3) -> "keras.Model":
    """A strided stem and one residual block per stage (strided convolutions, no pooling),
    global average pooling, dropout, dense logits: built unlike small_cnn, so that transfer
    between the two is transfer between architectures, and as cheap on CPU (about 0.3 M
    parameters; keras.applications' mobilenet_v2 spends about a minute tracing each fit on 2
    cores)."""
    if weights not in (None, "none"):
        raise ConfigError("small_resnet has no pretrained weights; use weights='none'")
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, width in enumerate(widths):
        x = _residual_block(x, width, 1 if i == 0 else 2, f"stage{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def _caffe_preprocess(name="imagenet_preprocess"):
    """[0, 1] RGB -> caffe BGR minus mean, as one frozen 1x1 convolution (built-in, serialisable)."""
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out_channel, in_channel in enumerate((2, 1, 0)):
        kernel[0, 0, in_channel, out_channel] = 255.0
    return layers.Conv2D(
        3, 1, name=name, trainable=False,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(-_CAFFE_MEAN_BGR),
    )


def _backbone_classifier(base_fn, preprocess, min_size, input_shape, n_classes, weights, dropout, name):
    if min(input_shape[:2]) < min_size:
        raise ConfigError(f"{name} needs images of at least {min_size}x{min_size}, got {input_shape[0]}x{input_shape[1]}")
    weights_path = None if weights in (None, "none") else str(weights)
    if weights_path == "imagenet":
        raise ConfigError(
            "weights='imagenet' would download at run time; pass the path of a local ImageNet weights "
            "file (the keras.applications *_notop.h5) instead"
        )
    inputs = keras.Input(input_shape, name="image")
    x = preprocess(inputs)
    base = base_fn(include_top=False, weights=weights_path, input_shape=input_shape)
    base.name = "backbone"
    if weights_path is None:
        _fast_batchnorm_statistics(base)
    # With pretrained weights the backbone's BatchNorm stays in inference mode, also once
    # unfrozen for fine-tuning: updating ImageNet statistics from small batches of lesions
    # would wreck the features the transfer is for. Keras 3's fit overrides this training=False
    # (keras-team/keras#20285), so training.fit also keeps those layers frozen (pretrained_batchnorm).
    x = base(x, training=False) if weights_path else base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _fast_batchnorm_statistics(model):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = SCRATCH_BN_MOMENTUM


def pretrained_batchnorm(model: "keras.Model") -> list:
    """The BatchNormalization layers of `model`'s backbone that hold pretrained statistics: a
    base loaded with weights keeps keras.applications' momentum, one from scratch takes
    SCRATCH_BN_MOMENTUM (_fast_batchnorm_statistics); the momentum travels with a saved model.
    Training keeps these frozen (training.fit)."""
    base = backbone(model)
    if base is None:
        return []
    return [layer for layer in base.layers
            if isinstance(layer, layers.BatchNormalization) and layer.momentum != SCRATCH_BN_MOMENTUM]


def resnet50(input_shape: tuple[int, ...], n_classes: int, weights: str | None = "none",
             dropout: float = 0.3) -> "keras.Model":
    """keras.applications ResNet50 with our head; `weights`: none or a local *_notop.h5 path."""
    return _backbone_classifier(
        keras.applications.ResNet50, _caffe_preprocess(), 32, input_shape, n_classes, weights, dropout, "resnet50"
    )


def inception_v3(input_shape: tuple[int, ...], n_classes: int, weights: str | None = "none",
                 dropout: float = 0.3) -> "keras.Model":
    """keras.applications InceptionV3 with our head (inputs scaled to [-1, 1]); needs >= 75 px."""
    scale = layers.Rescaling(2.0, offset=-1.0, name="imagenet_preprocess")
    return _backbone_classifier(
        keras.applications.InceptionV3, scale, 75, input_shape, n_classes, weights, dropout, "inception_v3"
    )


def mobilenet_v2(input_shape: tuple[int, ...], n_classes: int, weights: str | None = "none", dropout: float = 0.3,
                 width: float = 1.0) -> "keras.Model":
    """keras.applications MobileNetV2 with our head (inputs scaled to [-1, 1]); `width` is its
    alpha (channel multiplier; a local weights file exists for 0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
    On 2 CPU cores it spends about a minute tracing each fit; CPU grids take small_resnet."""
    scale = layers.Rescaling(2.0, offset=-1.0, name="imagenet_preprocess")

    def base(**kw):
        return keras.applications.MobileNetV2(alpha=width, **kw)
    return _backbone_classifier(base, scale, 32, input_shape, n_classes, weights, dropout, "mobilenet_v2")


ARCHITECTURES = {
    "small_cnn": small_cnn,
    "resnet50": resnet50,
    "inception_v3": inception_v3,
    "mobilenet_v2": mobilenet_v2,
    "small_resnet": small_resnet,
}
# The architectures whose width the `width` setting scales (the others have one width).
WIDTH_SCALED = ("small_cnn", "mobilenet_v2", "small_resnet")
# The stage widths `width` multiplies, for our own networks (mobilenet_v2 takes it as alpha).
_STAGE_WIDTHS = {"small_cnn": SMALL_CNN_WIDTHS, "small_resnet": SMALL_RESNET_WIDTHS}


def create_model(arch: str, input_shape: Sequence[int], n_classes: int, weights: str | None = "none", *,
                 dropout: float = 0.3, width: float = 1.0) -> "keras.Model":
    """Build architecture `arch` for images of `input_shape` (H, W, 3) and `n_classes` logits.

    dropout: rate before the dense head (every network); width: the channel multiplier of
    small_cnn (stage widths 32, 64, 128, 256 times width, at least 1 channel), small_resnet
    (32, 64, 128 times width) and mobilenet_v2 (its alpha); the other networks take only 1.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if arch not in WIDTH_SCALED and width != 1:
        raise ConfigError(f"width {width:g} is a setting of {', '.join(WIDTH_SCALED)}; {arch} has a fixed width "
                          "(give width 1)")
    if arch in _STAGE_WIDTHS:
        widths = tuple(max(1, round(w * width)) for w in _STAGE_WIDTHS[arch])
        return ARCHITECTURES[arch](tuple(input_shape), n_classes, weights=weights, widths=widths, dropout=dropout)
    extra = {"width": width} if arch in WIDTH_SCALED else {}
    return ARCHITECTURES[arch](tuple(input_shape), n_classes, weights=weights, dropout=dropout, **extra)


def backbone(model: "keras.Model") -> "keras.Model | None":
    """The pretrained base of a transfer-learning model, or None for a model without one."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        return None
