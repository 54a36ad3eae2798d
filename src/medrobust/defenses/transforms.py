"""Input transformations: (N, H, W, 3) float32 in [0, 1] in, the same shape, dtype and range out.

`llt` is the thesis' low-level transformation (after Yin et al. 2020): WebP compression, then a
horizontal flip. ART has no WebP preprocessor, so it is ours; `jpeg`, `smooth` (median filter)
and `squeeze` (bit-depth reduction) are ART's preprocessors. ART stacks no numpy preprocessors
on one classifier, so `apply_chain` composes them itself.

Each transform also names its backward pass for white-box (BPDA, Athalye et al. 2018) attacks:
the gradient of the part that is differentiable (the flip is its own transpose) and identity
through the rest (compression, filtering, quantisation).
"""

import io
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

from ..errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

    from ..config import DefendConfig
    from ..data import Dataset
    from .defended import DefendedClassifier
    from .spec import Hooks


def _check_quality(quality):
    if not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ConfigError(f"quality must be an integer in 1..100, got {quality!r}")
    return int(quality)


def _as_images(x):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {x.shape}")
    return x


def webp(x: np.ndarray, quality: int = 75) -> np.ndarray:
    """Each image through a lossy WebP encode and decode at `quality` (1..100)."""
    quality = _check_quality(quality)
    x = _as_images(x)
    out = np.empty_like(x)
    for i, image in enumerate(np.round(x * 255).astype(np.uint8)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="WEBP", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0
    return out


def hflip(x: np.ndarray) -> np.ndarray:
    return _as_images(x)[:, :, ::-1, :].copy()


def llt(x: np.ndarray, quality: int = 75) -> np.ndarray:
    """The thesis' LLT: WebP compression at `quality`, then a horizontal flip."""
    return hflip(webp(x, quality))


def jpeg(x: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG compression at `quality` (ART's JpegCompression)."""
    quality = _check_quality(quality)
    out, _ = JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=False)(_as_images(x))
    return out.astype(np.float32)


def smooth(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Median filter over a window x window neighbourhood per channel (ART's SpatialSmoothing)."""
    if not (isinstance(window, (int, np.integer)) and window >= 2):
        raise ConfigError(f"smooth window must be an integer >= 2, got {window!r}")
    out, _ = SpatialSmoothing(window_size=int(window), channels_first=False, clip_values=(0.0, 1.0))(_as_images(x))
    return out.astype(np.float32)


def squeeze(x: np.ndarray, bits: int = 5) -> np.ndarray:
    """Colour depth reduced to `bits` bits per channel (ART's FeatureSqueezing)."""
    if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= 8):
        raise ConfigError(f"squeeze bits must be an integer in 1..8, got {bits!r}")
    out, _ = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=int(bits))(_as_images(x))
    return out.astype(np.float32)


def _identity(dy):
    return dy


# name -> (function, {parameter: default}, backward pass for BPDA)
TRANSFORMS = {
    "squeeze": (squeeze, {"bits": 5}, _identity),
    "smooth": (smooth, {"window": 3}, _identity),
    "jpeg": (jpeg, {"quality": 75}, _identity),
    "llt": (llt, {"quality": 75}, lambda dy: dy[:, :, ::-1, :]),
}


def apply_chain(x: np.ndarray, chain: Sequence[tuple[str, dict[str, int]]]) -> np.ndarray:
    """x through each (name, params) of `chain`, first to last."""
    x = _as_images(x)
    for name, params in chain:
        x = TRANSFORMS[name][0](x, **params)
    return x


def backward_chain(dy: "tf.Tensor", chain: Sequence[tuple[str, dict[str, int]]]) -> "tf.Tensor":
    """The BPDA gradient of apply_chain: each transform's backward pass, last to first."""
    for name, _ in reversed(chain):
        dy = TRANSFORMS[name][2](dy)
    return dy


def builder(name: str,
            **settings: str) -> "Callable[[DefendedClassifier, Dataset, DefendConfig, Hooks], DefendedClassifier]":
    """Registry builder of transform `name`: the classifier with (name, params) appended to its
    chain, where `settings` maps each parameter of the transform to the DefendConfig field it is
    read from (llt: quality='llt_quality'); parameters not named keep TRANSFORMS' defaults."""
    defaults = TRANSFORMS[name][1]
    unknown = set(settings) - set(defaults)
    if unknown:  # a programming error, caught at import
        raise TypeError(f"transform {name} has no parameter {', '.join(sorted(unknown))}")

    def build(classifier: "DefendedClassifier", data: "Dataset", config: "DefendConfig",
              hooks: "Hooks") -> "DefendedClassifier":
        params = dict(defaults, **{param: getattr(config, field) for param, field in settings.items()})
        return replace(classifier, chain=tuple(classifier.chain) + ((name, params),))

    build.__name__ = build.__qualname__ = f"build_{name}"
    return build
