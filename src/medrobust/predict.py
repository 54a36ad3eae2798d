"""Images in, one row per image out, with the model's defense applied: `medrobust predict`, and
the contract every registered version serves (read_request, predict_frame, RESPONSE_COLUMNS)."""

import base64
import binascii
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tensorflow as tf

from .data import CLASSES, malignant_mask
from .data.images import decode_bytes, decode_files
from .errors import DataError

if TYPE_CHECKING:
    from .defenses.defended import DefendedClassifier

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_files(inputs: Iterable[Path | str]) -> list[Path]:
    """The image files among `inputs` (files, or folders searched recursively), sorted within
    each folder. Raises DataError naming an input that is missing or holds no images."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist")
    if not files:
        raise DataError("no images given")
    return files


def load_for(classifier: "DefendedClassifier", files: Iterable[Path | str], progress: bool = False) -> np.ndarray:
    """float32 (N, S, S, 3) in [0, 1]: each file decoded and resized to the model's input size
    exactly as the training images were (data.images.decode_image)."""
    size = int(classifier.input_shape[0])
    return decode_files([str(f) for f in files], size, progress=progress).astype(np.float32) / 255.0


IMAGE_ROOT_ENV = "MEDROBUST_IMAGE_ROOT"
ANYWHERE = object()  # image_root for a local user (the CLI): any path this user can read
# What a request may make a served model hold, so that none can exhaust its memory: it is read
# and answered CHUNK_IMAGES rows at a time; an encoded image in the `image` column has at most
# MAX_IMAGE_BYTES (its base64 text is 4/3 of that) and any image at most MAX_IMAGE_PIXELS (read
# from its header, before it is decoded), in one of the formats named.
CHUNK_IMAGES = 256
MAX_IMAGE_BYTES = 8 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
REQUEST_FORMATS = ("JPEG", "PNG")
SERVED_FILE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
# Up to this many images (a served request), the network is called at once, eagerly: a freshly
# loaded version then answers its first request without tracing its compiled forward pass (the
# path of larger inputs, models.training.predict_logits). Measured against Keras' model.predict,
# which predict_logits no longer uses (benchmarks/README.md).
DIRECT_CALL_IMAGES = 64
# What every registered version answers, one row per image, whatever its defense (docs/serving.md).
RESPONSE_COLUMNS = (*(f"p_{c}" for c in CLASSES), "predicted", "malignancy_score", "malignant_at_threshold", "rejected")


def load_confined(classifier: "DefendedClassifier", paths: Sequence[str], image_root: Path | str | None,
                  first_row: int = 0) -> np.ndarray:
    """load_for, for a served model: each path (relative: to the root) must resolve, symbolic
    links followed, inside `image_root`, and a path that is missing, unreadable or not an image
    gets the same error, so a caller cannot probe which files exist. image_root None refuses
    every path. Errors name the row, counted from first_row."""
    if image_root is None:
        raise DataError(f"this model reads image files only below an allowed folder; set {IMAGE_ROOT_ENV} where it "
                        "is served (or send the images themselves, base64, in an 'image' column)")
    root = Path(image_root).resolve()
    size = int(classifier.input_shape[0])
    out = np.empty((len(paths), size, size, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        row = first_row + i
        try:
            resolved = (root / path).resolve()
        except (OSError, ValueError):  # a NUL byte, a loop of links
            raise DataError(f"row {row}: no readable image at this path") from None
        if not resolved.is_relative_to(root):
            raise DataError(f"row {row}: the path is outside the allowed folder {root}")
        try:
            image = decode_bytes(resolved.read_bytes(), size, where=f"row {row}", formats=SERVED_FILE_FORMATS,
                                 max_pixels=MAX_IMAGE_PIXELS)
        except (DataError, OSError):
            raise DataError(f"row {row}: no readable image at this path") from None
        out[i] = image.astype(np.float32) / 255.0
    return out


def decode_base64_images(classifier: "DefendedClassifier", texts: Sequence[object], first_row: int = 0) -> np.ndarray:
    """(N, S, S, 3) float32 in [0, 1] from base64 text (no line breaks; a `data:image/...;base64,`
    prefix allowed) of JPEG or PNG files, each resized to the model's input as training images
    were. Raises DataError naming the first bad row (counted from first_row): not text, over
    MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS, not base64, or not a whole image (a truncated JPEG too)."""
    size = int(classifier.input_shape[0])
    out = np.empty((len(texts), size, size, 3), dtype=np.float32)
    limit = MAX_IMAGE_BYTES * 4 // 3 + 4
    for i, text in enumerate(texts):
        row = first_row + i
        if not isinstance(text, str) or not text:
            raise DataError(f"row {row}: 'image' must be the image file's bytes as base64 text, got {type(text).__name__}")
        if len(text) > limit:
            raise DataError(f"row {row}: 'image' holds {len(text) / 2**20:.1f} MiB of base64; an image may be at most "
                            f"{MAX_IMAGE_BYTES // 2**20} MiB")
        if text.startswith("data:") and "," in text[:100]:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"row {row}: 'image' is not base64 text (one line, no breaks)") from None
        try:
            image = decode_bytes(data, size, where=f"row {row}", formats=REQUEST_FORMATS, max_pixels=MAX_IMAGE_PIXELS)
        except DataError as e:
            raise DataError(f"{e} (the 'image' column must hold a whole JPEG or PNG file)") from None
        out[i] = image.astype(np.float32) / 255.0
    return out


def read_request(classifier: "DefendedClassifier", frame: pd.DataFrame,
                 image_root: Path | str | object | None = ANYWHERE, first_row: int = 0) -> np.ndarray:
    """The images of a request: a DataFrame with a `path` column (image files; see
    load_confined for image_root) or an `image` column (base64 bytes of image files), one per
    row. Returns (N, S, S, 3) float32 in [0, 1] at the model's input size. Errors name the
    row, counted from first_row (the frame's first row in the whole request)."""
    given = [c for c in ("path", "image") if c in frame.columns]
    if len(given) != 1:
        raise DataError("expected a DataFrame with one of the columns 'path' (image files) or 'image' (base64 JPEG or "
                        f"PNG bytes), got {'columns ' + str(list(frame.columns)) if len(frame.columns) else 'neither'}")
    if given == ["image"]:
        return decode_base64_images(classifier, list(frame["image"]), first_row)
    paths = []
    for i, path in enumerate(frame["path"]):
        if not isinstance(path, str) or not path:
            raise DataError(f"row {first_row + i}: 'path' must be a file path, got {type(path).__name__}")
        paths.append(path)
    if image_root is ANYWHERE:
        return load_for(classifier, paths)
    return load_confined(classifier, paths, image_root, first_row)


def predict_frame(classifier: "DefendedClassifier", images: np.ndarray | pd.DataFrame, health_map: str = "clinical", *,
                  image_root: Path | str | object | None = ANYWHERE, threshold: float | None = None) -> pd.DataFrame:
    """One row per image: p_<class> probabilities, the predicted class, the malignancy score
    (the sum of the malignant classes' probabilities), malignant_at_threshold (the score at or
    above `threshold`, the operating point; the column only with a threshold) and rejected (the
    detector's verdict; False without a detector): RESPONSE_COLUMNS.

    images: an (N, H, W, 3) array in [0, 1] at the model's input size, or a request DataFrame
    (read_request: a `path` or an `image` column, any image size), read and answered
    CHUNK_IMAGES rows at a time.
    """
    if not isinstance(images, pd.DataFrame):
        return _answer(classifier, images, health_map, threshold)
    parts = [_answer(classifier, read_request(classifier, images.iloc[start:start + CHUNK_IMAGES], image_root, start),
                     health_map, threshold)
             for start in range(0, max(len(images), 1), CHUNK_IMAGES)]
    return pd.concat(parts, ignore_index=True)


def _answer(classifier, images, health_map, threshold):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(classifier.input_shape):
        raise DataError(f"expected images of shape (N, {', '.join(map(str, classifier.input_shape))}), got {images.shape}")
    direct = len(images) <= DIRECT_CALL_IMAGES
    probabilities = np.asarray(tf.nn.softmax(classifier.logits(images, direct=direct), axis=-1))
    mask = malignant_mask(health_map)
    frame = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in CLASSES])
    frame["predicted"] = np.asarray(CLASSES)[probabilities.argmax(axis=1)]
    frame["malignancy_score"] = probabilities[:, mask].sum(axis=1)
    if threshold is not None:
        frame["malignant_at_threshold"] = frame["malignancy_score"].to_numpy() >= threshold
    frame["rejected"] = classifier.rejected(images, direct=direct)
    return frame


def predict_files(classifier: "DefendedClassifier", inputs: Iterable[Path | str], health_map: str = "clinical",
                  threshold: float | None = None) -> pd.DataFrame:
    """predict_frame for image files and folders (see image_files)."""
    paths = [str(f) for f in image_files(inputs)]
    frame = predict_frame(classifier, pd.DataFrame({"path": paths}), health_map, threshold=threshold)
    frame.insert(0, "path", paths)
    return frame
