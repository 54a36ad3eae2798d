"""Natural corruptions: what a clinic meets more often than an attacker, at severities 1 to 5.

    x_c = corrupt(x, "defocus_blur", 3, seed=0)     # (N, H, W, 3) float32 in [0, 1]

evaluation/shift.py measures a model on them.

In the manner of ImageNet-C / CIFAR-10-C (Hendrycks and Dietterich 2019): each corruption has
five severities. Parameters are CIFAR-10-C's at 32 px where it has the corruption (noise,
defocus, brightness, contrast, JPEG) and ImageNet-C's saturation table; motion blur's streak
lengths, rotation, zoom, colour temperature, hair and vignette are ours. Spatial parameters
(blur radii, line widths) scale with image size / 32, so 224-px images are corrupted alike.
Dermoscopy adds two: hair across the lesion, and the dark circle of a contact dermatoscope's
field (vignette).

Written here rather than taken from `imagecorruptions` or `albumentations`: the released
imagecorruptions (1.1.2) calls scikit-image with an argument removed in 0.19
(bethgelab/imagecorruptions#30) and needs OpenCV and ImageMagick; albumentations draws each
transform's strength at random per call, so a fixed severity grid would be our table of
parameters on its transforms anyway, behind OpenCV. These are numpy, scipy.ndimage and
Pillow, seeded per (corruption, severity), about 150 lines.
"""

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)


def _scale(x):
    return x.shape[1] / 32.0  # spatial parameters are CIFAR-10-C's at 32 px


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + rng.normal(0.0, c, size=x.shape)


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (500, 250, 100, 75, 50)[severity - 1]
    return rng.poisson(np.clip(x, 0, 1) * c) / c


def _disk(radius, alias_blur):
    r = max(radius, 0.5)
    size = int(math.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    kernel = (xx ** 2 + yy ** 2 <= r ** 2).astype(np.float64)
    kernel = ndimage.gaussian_filter(kernel / kernel.sum(), alias_blur)
    return kernel / kernel.sum()


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))[severity - 1]
    s = _scale(x)
    kernel = _disk(radius * s, alias * s)
    return ndimage.convolve(x, kernel[None, :, :, None], mode="reflect")


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A straight streak of `length` pixels at an angle drawn per image (a moving hand)."""
    length = (2, 3, 4, 5, 6)[severity - 1] * _scale(x)
    out = np.empty_like(x)
    for i, angle in enumerate(rng.uniform(0, np.pi, size=len(x))):
        size = int(math.ceil(length)) | 1
        kernel = np.zeros((size, size))
        centre = size // 2
        for t in np.linspace(-length / 2, length / 2, 4 * size):
            kernel[int(round(centre + t * math.sin(angle))), int(round(centre + t * math.cos(angle)))] = 1.0
        out[i] = ndimage.convolve(x[i], (kernel / kernel.sum())[:, :, None], mode="reflect")
    return out


def _hsv(x):
    return np.asarray(Image.fromarray(_to_uint8(x)).convert("HSV"), dtype=np.float64) / 255.0


def _from_hsv(hsv):
    return np.asarray(Image.fromarray(_to_uint8(hsv), "HSV").convert("RGB"), dtype=np.float64) / 255.0


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """CIFAR-10-C's amounts, added to every channel (CIFAR-10-C adds them to HSV value, which
    keeps hue and saturation; added to RGB the lesion also pales a little)."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    return x + c


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - means) * c + means


def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    scale, shift = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))[severity - 1]
    out = np.empty_like(x)
    for i in range(len(x)):
        hsv = _hsv(x[i])
        hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
        out[i] = _from_hsv(hsv)
    return out


def color_temperature(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """White balance off towards warm or cool light (the sign drawn per image): red up and blue
    down by c, or the reverse."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    sign = rng.choice((-1.0, 1.0), size=(len(x), 1, 1, 1))
    gains = np.concatenate([1 + sign * c, np.ones_like(sign), 1 - sign * c], axis=3)
    return x * gains


def jpeg(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = (80, 65, 58, 50, 40)[severity - 1]
    out = np.empty_like(x)
    for i in range(len(x)):
        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(x[i])).save(buffer, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer), dtype=np.float64) / 255.0
    return out


def rotate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A small rotation, clockwise or not (drawn per image), corners filled by reflection."""
    degrees = (5, 10, 15, 20, 30)[severity - 1]
    out = np.empty_like(x)
    for i, sign in enumerate(rng.choice((-1, 1), size=len(x))):
        out[i] = ndimage.rotate(x[i], sign * degrees, reshape=False, order=1, mode="reflect")
    return out


def zoom(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The centre magnified (a dermatoscope held closer), cropped back to the image size."""
    factor = (1.06, 1.12, 1.18, 1.24, 1.32)[severity - 1]
    h, w = x.shape[1:3]
    zoomed = ndimage.zoom(x, (1, factor, factor, 1), order=1)
    top, left = (zoomed.shape[1] - h) // 2, (zoomed.shape[2] - w) // 2
    return zoomed[:, top:top + h, left:left + w]


def hair(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Dark hairs across the image: curved strokes drawn at 4x and shrunk, so they are thin and
    anti-aliased at any image size."""
    count = (1, 2, 4, 6, 10)[severity - 1]
    h, w = x.shape[1:3]
    big = 4
    out = np.empty_like(x)
    colour = np.array([0.16, 0.11, 0.08])
    for i in range(len(x)):
        mask = Image.new("L", (w * big, h * big))
        draw = ImageDraw.Draw(mask)
        for _ in range(count):
            (x0, y0), (x1, y1), (cx, cy) = rng.uniform(0, 1, size=(3, 2)) * (w * big, h * big)
            t = np.linspace(0, 1, 24)[:, None]
            points = (1 - t) ** 2 * (x0, y0) + 2 * (1 - t) * t * (cx, cy) + t ** 2 * (x1, y1)
            draw.line([tuple(p) for p in points], fill=255, width=max(1, round(big * w / 64)))
        alpha = np.asarray(mask.resize((w, h), Image.BILINEAR), dtype=np.float64)[..., None] / 255.0 * 0.85
        out[i] = x[i] * (1 - alpha) + colour * alpha
    return out


def vignette(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The dark edge of a contact dermatoscope's circular field: black outside a circle whose
    radius (a share of half the image's diagonal) shrinks with severity, with a soft rim."""
    radius = (1.0, 0.9, 0.8, 0.7, 0.6)[severity - 1]
    h, w = x.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    distance = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)) / math.sqrt(2)
    keep = np.clip((radius - distance) / 0.08 + 0.5, 0, 1)  # a rim of 8 % of the half diagonal
    return x * keep[None, :, :, None]


# name -> function(x (N, H, W, 3) float64 in [0, 1], severity 1..5, numpy Generator) -> images
CORRUPTIONS = {f.__name__: f for f in (gaussian_noise, shot_noise, defocus_blur, motion_blur, brightness, contrast,
                                       saturate, color_temperature, jpeg, rotate, zoom, hair, vignette)}


def _to_uint8(x):
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def check_corruptions(names: Sequence[str], severities: Sequence[int]) -> None:
    """ConfigError (naming the setting) for an unknown corruption or a severity outside 1..5."""
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"unknown corruption {', '.join(map(repr, unknown))}; known: {', '.join(CORRUPTIONS)}",
                          ["corruptions"])
    wrong = [s for s in severities if s not in SEVERITIES]
    if wrong:
        raise ConfigError(f"corruption severities are 1 to 5, got {', '.join(map(repr, wrong))}", ["severities"])


CHUNK = 256  # images corrupted at a time: the float64 working copies stay small at 224 px


def corrupt(x: np.ndarray, name: str, severity: int, *, seed: int = 0, start: int = 0) -> np.ndarray:
    """`x` (N, H, W, 3) float in [0, 1] under corruption `name` at `severity` (1..5), as float32
    in [0, 1], quantised to 8 bits as a saved image would be. Worked CHUNK images at a time, each
    chunk seeded by (seed, corruption, severity, its first image's index): the same call gives
    the same images, and a caller going through a larger set in chunks passes each chunk's
    `start` (its index in the set) to get the images one call on the set would give."""
    check_corruptions((name,), (severity,))
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(0, len(x), CHUNK):
        rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity, start + i])
        part = CORRUPTIONS[name](x[i:i + CHUNK].astype(np.float64), severity, rng)
        out[i:i + CHUNK] = _to_uint8(part) / 255.0
    return out


__all__ = ["CHUNK", "CORRUPTIONS", "SEVERITIES", "check_corruptions", "corrupt"]
