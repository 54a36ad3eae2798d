import numpy as np
import pandas as pd
import pytest

from medrobust.data.split import DEFAULT_FRACTIONS, grouped_stratified_split, subset_by_class, stratified_subset


@pytest.fixture(scope="module")
def labels_groups(ham_metadata):
    return ham_metadata["dx"].to_numpy(), ham_metadata["lesion_id"].to_numpy()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_full_ham10000_split_is_grouped_and_stratified(labels_groups, seed):
    labels, groups = labels_groups
    sides = grouped_stratified_split(labels, groups, DEFAULT_FRACTIONS, seed)
    # no lesion on two sides
    assert pd.Series(sides).groupby(groups).nunique().max() == 1
    # every class within one image of its target in every split
    for cls in np.unique(labels):
        n = (labels == cls).sum()
        for side, fraction in enumerate(DEFAULT_FRACTIONS):
            got = ((labels == cls) & (sides == side)).sum()
            assert abs(got - fraction * n) <= 1, (cls, side, got, fraction * n)


def test_split_is_deterministic_and_seed_dependent(labels_groups):
    labels, groups = labels_groups
    a = grouped_stratified_split(labels, groups, seed=3)
    b = grouped_stratified_split(labels, groups, seed=3)
    c = grouped_stratified_split(labels, groups, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_respects_other_fractions(labels_groups):
    labels, groups = labels_groups
    sides = grouped_stratified_split(labels, groups, (0.5, 0.25, 0.25), seed=0)
    assert np.bincount(sides) / len(sides) == pytest.approx([0.5, 0.25, 0.25], abs=0.002)


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        grouped_stratified_split([0, 1], [0, 1], (0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        grouped_stratified_split([0, 1], [0, 1], (1.0, 0.0, 0.0))


def test_subset_takes_whole_lesions_of_each_class(labels_groups):
    labels, groups = labels_groups
    keep = subset_by_class(labels, groups, 40, seed=0)
    kept_labels = labels[keep]
    for cls in np.unique(labels):
        assert 40 <= (kept_labels == cls).sum() <= 45
    kept = set(keep)
    for lesion in np.unique(groups[keep]):
        members = np.flatnonzero(groups == lesion)
        assert all(m in kept for m in members)
    assert np.array_equal(keep, subset_by_class(labels, groups, 40, seed=0))


def test_stratified_subset_keeps_each_class_share(labels_groups):
    labels = np.unique(labels_groups[0], return_inverse=True)[1]  # class codes, in the metadata's order
    keep = stratified_subset(labels, 500, seed=3)
    assert len(keep) == 500 and len(set(keep)) == 500 and np.all(np.diff(keep) > 0)
    share = np.bincount(labels, minlength=7) * 500 / len(labels)
    assert np.all(np.abs(np.bincount(labels[keep], minlength=7) - share) < 1)  # within one image per class
    assert np.array_equal(keep, stratified_subset(labels, 500, seed=3))
    assert not np.array_equal(keep, stratified_subset(labels, 500, seed=4))
    # HAM10000's metadata lists images by class: the first 500 would hold two classes only.
    assert len(set(labels[:500])) < 3 < len(set(labels[keep]))
    assert np.array_equal(stratified_subset(labels[:10], 50), np.arange(10))


def test_a_subsets_split_is_the_full_datas_split(ham_dir, ham_metadata):
    """--per-class-limit takes its images from each side of the full data's split (issue 20, 9):
    a model trained on a subset finds none of its training lesions in the full test split."""
    from medrobust.config import DataConfig
    from medrobust.data import load_dataset
    from medrobust.data.split import SPLITS

    full = grouped_stratified_split(ham_metadata["dx"].to_numpy(), ham_metadata["lesion_id"].to_numpy(), seed=0)
    side_of = dict(zip(ham_metadata["image_id"], np.asarray(SPLITS)[full]))
    subset = load_dataset(DataConfig(path=str(ham_dir), image_size=16, per_class_limit=15), progress=False).table
    assert (subset["split"] == subset["image_id"].map(side_of)).all()
    per_class = subset.groupby("dx").size()
    assert per_class.min() >= 10 and per_class.max() <= 30, per_class  # about 15 each
    assert set(subset.loc[subset.split == "test", "dx"]) == set(ham_metadata.dx)  # every class is tested
