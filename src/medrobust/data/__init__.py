"""Data: sources, the lesion-grouped split, decoding with a cache, label maps.

`load_dataset(DataConfig)` is the one call a step makes.
"""

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from . import download
from .images import default_cache_dir, load_images
from .labels import CLASSES, HEALTH_MAPS, N_CLASSES, class_index, malignant_mask
from .sources import DataError, Source, check_all_classes, fingerprint, open_source
from .split import SPLITS, check_fractions, grouped_stratified_split, stratified_subset, subset_within_splits

log = logging.getLogger(__name__)


class DataSettings(Protocol):
    """What load_dataset reads of a config.DataConfig (config/ sits above data/, so data/ names
    no config class)."""

    path: str | None
    image_size: int
    fractions: tuple[float, float, float]
    split_seed: int
    per_class_limit: int | None
    cache_dir: str | None

__all__ = [
    "CLASSES", "HEALTH_MAPS", "N_CLASSES", "SPLITS", "DataError", "Dataset", "Source",
    "class_index", "image_ids", "images", "load_dataset", "malignant_mask", "open_source", "resolve_data_path",
    "stratified_subset",
]


@dataclass
class Dataset:
    """Images as float32 in [0, 1], NHWC, and integer labels, per split.

    table: one row per image (image_id, lesion_id, dx, label, split), aligned with the
    concatenation of the splits in SPLITS order; it is what the split CSV artifact holds.
    """

    x: dict
    y: dict
    table: pd.DataFrame
    fingerprint: str
    layout: str
    source: str
    cache_path: str
    from_cache: bool

    @property
    def image_size(self) -> int:
        return int(self.x["train"].shape[1])


def resolve_data_path(path: Path | str | None, cache_dir: Path | str | None = None, image_size: int = 64) -> Path:
    """The data path to read: `path`, else $MEDROBUST_DATA, else DermaMNIST downloaded into the cache."""
    path = path or os.environ.get("MEDROBUST_DATA")
    if path:
        return Path(path).expanduser().absolute()
    # The smallest official size that is not smaller than what the model needs.
    sizes = sorted(download.DERMAMNIST)
    size = next((s for s in sizes if s >= image_size), sizes[-1])
    return download.dermamnist(Path(cache_dir) if cache_dir else default_cache_dir(), size=size)


def load_dataset(config: DataSettings, progress: bool = True, *, whole: bool = False) -> Dataset:
    """Read, subset, split, decode (or read from cache) and scale the data of a DataConfig.

    whole: every image goes to the test split (train and val empty) and a class may have no
    image: an external test set, measured as a whole. Otherwise every class needs an image and
    every split at least one."""
    fractions = check_fractions(config.fractions)
    source = open_source(resolve_data_path(config.path, config.cache_dir, config.image_size))
    records = source.records
    if not whole:
        check_all_classes(records, source.csv or source.path)
    if "split" not in records and not whole:  # MedMNIST keeps its official split
        sides = grouped_stratified_split(records["label"], records["lesion_id"], fractions, config.split_seed)
        records = records.assign(split=np.asarray(SPLITS)[sides])
    if config.per_class_limit:
        # Split first, then subset each side: a subset's split is the full data's, so a model
        # trained on a subset never finds its training lesions in the full data's test split.
        keep = subset_within_splits(records, config.per_class_limit, config.split_seed)
        records = records.iloc[keep].reset_index(drop=True)
    source = replace(source, records=records)
    for side in () if whole else SPLITS:
        if not (records["split"] == side).any():
            raise DataError(f"{source.path}: the {side} split is empty; use more images or other fractions")
    digest = fingerprint(source)
    images, cache_path, from_cache = load_images(source, digest, config.image_size, config.cache_dir, progress)
    if whole:
        records = records.assign(split="test")
    log.info("data: %d images from %s (%s), %s %s", len(records), source.path, source.layout,
             "read from the cache" if from_cache else "decoded into the cache", cache_path)
    x, y, parts = {}, {}, []
    for side in SPLITS:
        mask = (records["split"] == side).to_numpy()
        x[side] = images[mask].astype(np.float32) / 255.0
        y[side] = records["label"].to_numpy()[mask]
        parts.append(records[mask])
    table = pd.concat(parts, ignore_index=True)[["image_id", "lesion_id", "dx", "label", "split"]]
    return Dataset(x, y, table, digest, source.layout, str(source.path), str(cache_path), from_cache)


def _sample(data, split, max_images, seed):
    """(sides, indices or None): the splits read, in order, and the class-stratified sample of
    max_images taken from their concatenation (None: every image)."""
    sides = ("train", "val", "test") if split == "all" else (split,)
    y = np.concatenate([data.y[s] for s in sides])
    return sides, (stratified_subset(y, max_images, seed=seed) if max_images else None)


def images(data: Dataset, split: str, max_images: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one split, or of every image for split 'all'; max_images: a class-stratified
    sample of that many."""
    sides, keep = _sample(data, split, max_images, seed)
    x = np.concatenate([data.x[s] for s in sides])
    y = np.concatenate([data.y[s] for s in sides])
    return (x, y) if keep is None else (x[keep], y[keep])


def image_ids(data: Dataset, split: str, max_images: int | None, seed: int) -> np.ndarray:
    """(N,) the image ids of images(data, split, max_images, seed), in its order."""
    sides, keep = _sample(data, split, max_images, seed)
    ids = np.concatenate([data.table.image_id[data.table.split == s].to_numpy() for s in sides])
    return ids if keep is None else ids[keep]
