"""Lesion-grouped, class-stratified train / val / test split.

Our own, because scikit-learn's StratifiedGroupKFold gives k equal folds and only
approximate class proportions; here each class must land at 70 / 17.5 / 12.5 % to within one
image while no lesion is on two sides.
"""

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.175, 0.125)


def check_fractions(fractions: Iterable[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    return fractions


def grouped_stratified_split(labels: np.ndarray | pd.Series, groups: np.ndarray | pd.Series,
                             fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> np.ndarray:
    """Assign each image to train (0), val (1) or test (2).

    labels: (N,) class of each image; groups: (N,) lesion id of each image (one class per lesion).
    Returns an int array of shape (N,).

    Per class, lesions of two or more images are placed first (in seeded random order) into the
    split furthest below its share, relative to its target, among those it does not overfill by
    more than one image; single-image lesions then fill whichever split is furthest below its
    target in images. When a class has enough single-image lesions (HAM10000's all do) every
    split ends within one image of `fraction * n_class`.
    """
    fractions = np.asarray(check_fractions(fractions))
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), -1, dtype=np.int64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        lesion_ids, inverse, sizes = np.unique(groups[members], return_inverse=True, return_counts=True)
        target = fractions * len(members)
        count = np.zeros(3)
        order = rng.permutation(len(lesion_ids))
        multi = order[sizes[order] > 1]
        single = order[sizes[order] == 1]
        assigned = np.empty(len(lesion_ids), dtype=np.int64)
        for lesion in multi:
            deficit = target - count
            fits = sizes[lesion] <= deficit + 1
            if fits.any():
                relative = np.where(fits, deficit / target, -np.inf)
                side = int(np.argmax(relative))
            else:
                side = int(np.argmax(deficit))
            assigned[lesion] = side
            count[side] += sizes[lesion]
        for lesion in single:
            side = int(np.argmax(target - count))
            assigned[lesion] = side
            count[side] += 1
        out[members] = assigned[inverse]
    return out


def subset_by_class(labels: np.ndarray | pd.Series, groups: np.ndarray | pd.Series, per_class: int,
                    seed: int = 0) -> np.ndarray:
    """Indices of at most about `per_class` images of each class, taken as whole lesions.

    Lesions are drawn in seeded random order until the class reaches `per_class` images (the
    last lesion may take it a few images over). Returns sorted indices into labels.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        lesions = np.unique(groups[members])
        taken = 0
        for lesion in lesions[rng.permutation(len(lesions))]:
            if taken >= per_class:
                break
            idx = members[groups[members] == lesion]
            keep.append(idx)
            taken += len(idx)
    return np.sort(np.concatenate(keep))


def subset_within_splits(records: pd.DataFrame, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about `per_class` images of each class, taken as whole lesions
    (subset_by_class) from each split in proportion to its share of the images: the subset's
    split is the one the whole data has. records: a table with label, lesion_id and, where the
    data is split, split; without a split column it is one subset_by_class."""
    if "split" not in records:
        return subset_by_class(records["label"], records["lesion_id"], per_class, seed)
    keep = []
    for side in records["split"].unique():
        members = np.flatnonzero((records["split"] == side).to_numpy())
        quota = max(1, round(per_class * len(members) / len(records)))
        picked = subset_by_class(records["label"].to_numpy()[members], records["lesion_id"].to_numpy()[members], quota, seed)
        keep.append(members[picked])
    return np.sort(np.concatenate(keep))


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` images drawn so that each class keeps its share (largest
    remainders round the quotas; seeded). Taking the first n instead would follow the
    metadata's order, which in HAM10000 is grouped by class. n >= len(labels): every index."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(keep))
