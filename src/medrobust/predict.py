"""`medrobust predict`: images in, one row per image out, with the model's defense applied."""

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from .data import CLASSES, malignant_mask
from .data.images import decode_files, decode_image
from .errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_files(inputs):
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


def load_for(classifier, files, progress=False):
    """float32 (N, S, S, 3) in [0, 1]: each file decoded and resized to the model's input size
    exactly as the training images were (data.images.decode_image)."""
    size = int(classifier.input_shape[0])
    return decode_files([str(f) for f in files], size, progress=progress).astype(np.float32) / 255.0


IMAGE_ROOT_ENV = "MEDROBUST_IMAGE_ROOT"
ANYWHERE = object()  # image_root for a local user (the CLI): any path this user can read


def load_confined(classifier, paths, image_root):
    """load_for, for a served model: each path must resolve (symbolic links followed) inside
    `image_root`, and a path that is missing, unreadable or not an image gets the same error,
    so a caller cannot probe which files exist. image_root None refuses every path."""
    if image_root is None:
        raise DataError(f"this model reads image files only below an allowed folder; set {IMAGE_ROOT_ENV} where it "
                        "is served (or pass images as an array)")
    root = Path(image_root).resolve()
    size = int(classifier.input_shape[0])
    out = np.empty((len(paths), size, size, 3), dtype=np.float32)
    for row, path in enumerate(paths):
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(root):
            raise DataError(f"row {row}: the path is outside the allowed folder {root}")
        try:
            out[row] = decode_image(resolved, size).astype(np.float32) / 255.0
        except (DataError, OSError):
            raise DataError(f"row {row}: no readable image at this path") from None
    return out


def predict_frame(classifier, images, health_map="clinical", *, image_root=ANYWHERE, threshold=None):
    """One row per image: p_<class> probabilities, predicted class, malignant (the health call
    of the predicted class), rejected (the detector's verdict; False without a detector).

    images: an (N, H, W, 3) array in [0, 1], or a DataFrame with a `path` column of image
    files (what `mlflow models predict` passes from a CSV); paths become a `path` column.
    image_root: where paths may point (see load_confined); the default, ANYWHERE, is the
    local user's own CLI. threshold: the operating point on the malignancy score (the sum of
    the malignant classes' probabilities); with it, a `malignant_at_threshold` column.
    """
    paths = None
    if isinstance(images, pd.DataFrame):
        if "path" not in images.columns:
            raise DataError(f"expected a DataFrame with a 'path' column of image files, got columns {list(images.columns)}")
        paths = [str(p) for p in images["path"]]
        images = load_for(classifier, paths) if image_root is ANYWHERE else load_confined(classifier, paths, image_root)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(classifier.input_shape):
        raise DataError(f"expected images of shape (N, {', '.join(map(str, classifier.input_shape))}), got {images.shape}")
    probabilities = np.asarray(tf.nn.softmax(classifier.logits(images), axis=-1))
    predicted = probabilities.argmax(axis=1)
    frame = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in CLASSES])
    frame.insert(0, "predicted", np.asarray(CLASSES)[predicted])
    frame.insert(1, "malignant", malignant_mask(health_map)[predicted])
    frame.insert(2, "rejected", classifier.rejected(images))
    mask = malignant_mask(health_map)
    frame.insert(3, "malignancy_score", probabilities[:, mask].sum(axis=1))
    if threshold is not None:
        frame.insert(4, "malignant_at_threshold", frame["malignancy_score"].to_numpy() >= threshold)
    if paths is not None:
        frame.insert(0, "path", paths)
    return frame


def predict_files(classifier, inputs, health_map="clinical", threshold=None):
    """predict_frame for image files and folders (see image_files)."""
    return predict_frame(classifier, pd.DataFrame({"path": [str(f) for f in image_files(inputs)]}), health_map,
                         threshold=threshold)
