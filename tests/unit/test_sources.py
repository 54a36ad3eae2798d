"""Each source layout, and each kind of bad input, on real HAM10000 images copied to tmp."""

import shutil

import numpy as np
import pandas as pd
import pytest

from medrobust.config import DataConfig
from medrobust.data import CLASSES, DataError, load_dataset, open_source
from medrobust.data.labels import ISIC2018_COLUMNS


def test_ham10000_layout(small_ham):
    source = open_source(small_ham)
    assert source.layout == "ham10000"
    assert len(source.records) == len(pd.read_csv(small_ham / "HAM10000_metadata.csv")) >= 21
    assert sorted(source.records["dx"].unique()) == sorted(CLASSES)
    assert source.records["file"].map(lambda f: f.endswith(".jpg")).all()


def test_real_ham10000_reads_every_image(ham_dir):
    source = open_source(ham_dir)
    assert len(source.records) == 10015
    assert source.records["lesion_id"].nunique() == 7470
    assert np.bincount(source.records["label"]).tolist() == [327, 514, 1099, 115, 1113, 6705, 142]


def _isic_folder(small_ham, tmp_path, groupings=True):
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    folder = tmp_path / "isic"
    shutil.copytree(small_ham / "images", folder / "ISIC2018_Task3_Training_Input")
    onehot = pd.DataFrame({"image": meta.image_id})
    for col in ISIC2018_COLUMNS:
        onehot[col] = (meta.dx.str.upper() == col).astype(float)
    onehot.to_csv(folder / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    if groupings:
        meta.rename(columns={"image_id": "image"})[["image", "lesion_id"]].to_csv(
            folder / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return folder, meta


def test_isic2018_layout_matches_the_same_images(small_ham, tmp_path):
    folder, meta = _isic_folder(small_ham, tmp_path)
    source = open_source(folder)
    assert source.layout == "isic2018"
    merged = source.records.merge(meta, left_on="image_id", right_on="image_id")
    assert (merged["dx_x"] == merged["dx_y"]).all()
    assert (merged["lesion_id_x"] == merged["lesion_id_y"]).all()


def test_isic2018_without_groupings_warns(small_ham, tmp_path):
    folder, _ = _isic_folder(small_ham, tmp_path, groupings=False)
    with pytest.warns(UserWarning, match="its own lesion"):
        source = open_source(folder)
    assert (source.records["lesion_id"] == source.records["image_id"]).all()


def test_isic2018_row_with_two_classes_is_named(small_ham, tmp_path):
    folder, _ = _isic_folder(small_ham, tmp_path)
    csv = folder / "ISIC2018_Task3_Training_GroundTruth.csv"
    table = pd.read_csv(csv)
    table.loc[3, "NV"] = 1.0
    table.loc[3, "MEL"] = 1.0
    table.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"GroundTruth.csv: line 5: expected exactly one 1"):
        open_source(folder)


def _npz(path, n=(14, 7, 7), size=8, **override):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 7).reshape(-1, 1)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_medmnist_keeps_official_split_and_resizes(tmp_path):
    path = _npz(tmp_path / "dermamnist.npz")
    data = load_dataset(DataConfig(path=str(path), image_size=16), progress=False)
    assert data.layout == "medmnist"
    assert {k: len(v) for k, v in data.y.items()} == {"train": 14, "val": 7, "test": 7}
    assert data.x["train"].shape == (14, 16, 16, 3)
    assert data.x["train"].dtype == np.float32 and 0 <= data.x["train"].min() and data.x["train"].max() <= 1
    assert data.y["val"].tolist() == list(range(7))


def test_load_dataset_on_real_subset(ham_dir):
    config = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20, split_seed=1)
    data = load_dataset(config, progress=False)
    assert sum(len(y) for y in data.y.values()) == len(data.table)
    assert set(data.table["split"]) == {"train", "val", "test"}
    assert data.table.groupby("lesion_id")["split"].nunique().max() == 1
    assert data.x["test"].shape[1:] == (32, 32, 3)
    again = load_dataset(config, progress=False)
    assert again.from_cache and again.fingerprint == data.fingerprint
    np.testing.assert_array_equal(again.x["train"], data.x["train"])
    np.testing.assert_array_equal(again.table["image_id"], data.table["image_id"])


# ---- bad input: each gets an error that names the file (and row) -----------------------------

def _edit_csv(folder, edit):
    csv = folder / "HAM10000_metadata.csv"
    table = pd.read_csv(csv, dtype=str)
    table = edit(table)
    table.to_csv(csv, index=False)
    return csv


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        open_source(tmp_path / "nowhere")


def test_missing_csv(small_ham):
    (small_ham / "HAM10000_metadata.csv").unlink()
    with pytest.raises(DataError, match="no metadata CSV"):
        open_source(small_ham)


def test_image_listed_but_absent(small_ham):
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    (small_ham / "images" / f"{meta.image_id[6]}.jpg").unlink()
    with pytest.raises(DataError, match=rf"line 8: image {meta.image_id[6]} is listed but no"):
        open_source(small_ham)


def test_corrupt_jpeg_is_named(small_ham):
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    bad = small_ham / "images" / f"{meta.image_id[2]}.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{meta.image_id[2]}.jpg: cannot decode"):
        load_dataset(DataConfig(path=str(small_ham), image_size=16), progress=False)


def test_unknown_dx(small_ham):
    def edit(t):
        t.loc[4, "dx"] = "melanomaa"
        return t
    csv = _edit_csv(small_ham, edit)
    with pytest.raises(DataError, match=rf"{csv.name}: line 6: unknown dx 'melanomaa'"):
        open_source(small_ham)


def test_duplicate_image_id(small_ham):
    def edit(t):
        t.loc[9, "image_id"] = t.loc[1, "image_id"]
        return t
    _edit_csv(small_ham, edit)
    with pytest.raises(DataError, match="line 11: image_id .* duplicates line 3"):
        open_source(small_ham)


def test_class_with_no_image_is_refused_for_training_not_for_an_external_test_set(small_ham, tmp_path):
    _edit_csv(small_ham, lambda t: t[t.dx != "df"])
    config = DataConfig(path=str(small_ham), image_size=16, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="class df has no image"):
        load_dataset(config)
    whole = load_dataset(config, whole=True)  # measured as a whole: any classes, no split
    assert len(whole.y["train"]) == len(whole.y["val"]) == 0
    assert len(whole.y["test"]) == len(open_source(small_ham).records)
    assert CLASSES.index("df") not in set(whole.y["test"])


def test_npz_missing_keys(tmp_path):
    path = _npz(tmp_path / "d.npz", val_labels=None)
    with pytest.raises(DataError, match="d.npz: missing keys val_labels"):
        open_source(path)


def test_npz_mismatched_lengths(tmp_path):
    path = _npz(tmp_path / "d.npz", test_labels=np.zeros((6, 1), dtype=int))
    with pytest.raises(DataError, match="test_images has 7 images but test_labels has 6"):
        open_source(path)


def test_npz_label_out_of_range(tmp_path):
    path = _npz(tmp_path / "d.npz", train_labels=np.full((14, 1), 9))
    with pytest.raises(DataError, match=r"train_labels\[0\] = 9"):
        open_source(path)


def test_full_ham10000_second_load_comes_from_cache(ham_dir, tmp_path):
    config = DataConfig(path=str(ham_dir), image_size=16, cache_dir=str(tmp_path / "cache"))
    first = load_dataset(config, progress=False)
    assert not first.from_cache and sum(len(y) for y in first.y.values()) == 10015
    second = load_dataset(config, progress=False)
    assert second.from_cache and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.x["test"], first.x["test"])
