"""Reading a data source into one table of records, whatever its layout.

Three layouts, detected from the path:

- `ham10000`: a folder with a metadata CSV holding `lesion_id,image_id,dx` and the images
  (`<image_id>.jpg|png`) anywhere up to two folders below it;
- `isic2018`: a folder with an ISIC 2018 Task 3 ground-truth CSV (`image` + one-hot
  `MEL,NV,BCC,AKIEC,BKL,DF,VASC`), optionally a lesion-groupings CSV (`image,lesion_id`);
- `medmnist`: a `dermamnist*.npz` with `{train,val,test}_{images,labels}` (its split is kept).

A source's records are a DataFrame with one row per image: `image_id, lesion_id, label` (index
into CLASSES), `dx`, and `file` (the image path) or `split` (for MedMNIST, the official split).
Every problem raises DataError naming the file and, where there is one, the CSV line.
"""

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .labels import CLASSES, ISIC2018_COLUMNS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MEDMNIST_KEYS = tuple(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))


@dataclass(frozen=True)
class Source:
    layout: str  # ham10000 | isic2018 | medmnist
    path: Path
    records: pd.DataFrame
    csv: Path | None = None  # the metadata / ground-truth CSV, for folder layouts


def open_source(path: Path | str) -> Source:
    """Detect the layout of `path` and read its records. Raises DataError on any bad input."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file():
        if path.suffix == ".npz":
            return read_medmnist(path)
        raise DataError(f"{path}: expected a folder (HAM10000 or ISIC 2018) or a MedMNIST .npz file")
    csvs = sorted(path.glob("*.csv"))
    headers = {csv: _csv_header(csv) for csv in csvs}
    ham = [c for c, h in headers.items() if {"lesion_id", "image_id", "dx"} <= h]
    isic = [c for c, h in headers.items() if {"image", *ISIC2018_COLUMNS} <= h]
    if ham:
        return read_ham10000(path, ham[0])
    if isic:
        return read_isic2018(path, isic[0])
    empty = [c for c, h in headers.items() if not h - {""}]
    if empty:
        raise DataError(f"{empty[0]}: the file is empty; expected a HAM10000 metadata CSV (lesion_id,image_id,dx) or "
                        "an ISIC 2018 ground-truth CSV")
    raise DataError(
        f"{path}: no metadata CSV found; expected a HAM10000 CSV with columns lesion_id,image_id,dx "
        f"or an ISIC 2018 ground-truth CSV with columns image,{','.join(ISIC2018_COLUMNS)} "
        f"(CSV files seen: {', '.join(c.name for c in csvs) or 'none'})"
    )


def text_encoding(csv: Path | str) -> str:
    """The encoding to read a CSV with: UTF-16 or UTF-8 with a byte-order mark, else UTF-8.
    Anything else (Latin-1 from an old spreadsheet, say) is a DataError naming the file and
    the line of the first byte that is not UTF-8."""
    data = Path(csv).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{csv}: line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8 "
                        "(or UTF-16 with a byte-order mark)") from None
    return "utf-8-sig"


def _csv_header(csv):
    with open(csv, newline="", encoding=text_encoding(csv)) as f:
        return {c.strip() for c in f.readline().strip().split(",")}


def _read_csv(csv):
    try:
        return pd.read_csv(csv, dtype=str, keep_default_na=False, encoding=text_encoding(csv))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{csv}: cannot parse CSV ({e})") from e


def _line(row_position):
    """CSV line number of a 0-based data row (line 1 is the header)."""
    return row_position + 2


def _index_images(folder):
    """{stem: path} for every image file up to two folders below `folder`, the shallower first.
    Made on every load; os.scandir rather than Path.glob, whose Path objects for HAM10000's
    10,015 files cost about twice as much. An unreadable folder is skipped, as Path.glob skips
    it: an image listed there is then named as missing."""
    index, level = {}, [str(folder)]
    for _ in range(3):
        below = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir():
                    below.append(entry.path)
                    continue
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    index.setdefault(stem, entry.path)
        level = below
    return index


def _check_ids(csv, ids, column):
    empty = np.flatnonzero(ids.str.strip() == "")
    if empty.size:
        raise DataError(f"{csv}: line {_line(empty[0])}: empty {column}")
    first = {}
    for pos, image_id in enumerate(ids):
        if image_id in first:
            raise DataError(
                f"{csv}: line {_line(pos)}: {column} {image_id} duplicates line {_line(first[image_id])}"
            )
        first[image_id] = pos


def _attach_files(csv, folder, records):
    index = _index_images(folder)
    files = []
    for pos, image_id in enumerate(records["image_id"]):
        if image_id not in index:
            raise DataError(
                f"{csv}: line {_line(pos)}: image {image_id} is listed but no {image_id}.jpg/.png "
                f"exists under {folder}"
            )
        files.append(index[image_id])
    records["file"] = files
    return records


def _check_lesions(csv, records):
    """A lesion must carry one diagnosis: two would make the grouped split ill-defined."""
    counts = records.groupby("lesion_id")["label"].nunique()
    bad = counts[counts > 1]
    if len(bad):
        lesion = bad.index[0]
        rows = records.index[records["lesion_id"] == lesion]
        raise DataError(
            f"{csv}: lesion {lesion} has images of several classes (lines "
            f"{', '.join(str(_line(r)) for r in rows)})"
        )


def check_all_classes(records: pd.DataFrame, where: Path | str) -> None:
    counts = np.bincount(records["label"].to_numpy(), minlength=len(CLASSES))
    missing = [c for c, n in zip(CLASSES, counts) if n == 0]
    if missing:
        raise DataError(f"{where}: class {', '.join(missing)} has no image; every class of {CLASSES} needs one")


def read_ham10000(folder: Path | str, csv: Path | str) -> Source:
    """Records of a HAM10000-layout folder with metadata CSV `csv`."""
    folder, csv = Path(folder), Path(csv)
    table = _read_csv(csv)
    dx = table["dx"].str.strip().str.lower()
    unknown = np.flatnonzero(~dx.isin(CLASSES))
    if unknown.size:
        pos = unknown[0]
        raise DataError(
            f"{csv}: line {_line(pos)}: unknown dx {table['dx'].iloc[pos]!r}; expected one of {', '.join(CLASSES)}"
        )
    image_ids = table["image_id"].str.strip()
    _check_ids(csv, image_ids, "image_id")
    lesion_ids = table["lesion_id"].str.strip()
    empty = np.flatnonzero(lesion_ids == "")
    if empty.size:
        raise DataError(f"{csv}: line {_line(empty[0])}: empty lesion_id")
    records = pd.DataFrame(
        {"image_id": image_ids, "lesion_id": lesion_ids, "dx": dx, "label": dx.map(CLASSES.index).astype(np.int64)}
    )
    _check_lesions(csv, records)
    return Source("ham10000", folder, _attach_files(csv, folder, records), csv)


def read_isic2018(folder: Path | str, csv: Path | str) -> Source:
    """Records of an ISIC 2018 Task 3 folder with ground-truth CSV `csv`.

    Lesion ids come from a CSV with columns `image,lesion_id` in the same folder (the official
    ISIC2018_Task3_*_LesionGroupings.csv). Without one each image is its own lesion, and a
    warning says that the split may then put two images of one lesion on both sides.
    """
    folder, csv = Path(folder), Path(csv)
    table = _read_csv(csv)
    image_ids = table["image"].str.strip()
    _check_ids(csv, image_ids, "image")
    try:
        onehot = table[list(ISIC2018_COLUMNS)].apply(lambda c: c.str.strip().astype(float)).to_numpy()
    except ValueError as e:
        raise DataError(f"{csv}: non-numeric value in {','.join(ISIC2018_COLUMNS)} ({e})") from e
    valid = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
    bad = np.flatnonzero(~valid)
    if bad.size:
        pos = bad[0]
        raise DataError(
            f"{csv}: line {_line(pos)}: expected exactly one 1 among {','.join(ISIC2018_COLUMNS)}, "
            f"got {onehot[pos].tolist()}"
        )
    dx = pd.Series([ISIC2018_COLUMNS[i].lower() for i in onehot.argmax(axis=1)], index=table.index)
    lesion_ids = image_ids.copy()
    groupings = [c for c in sorted(folder.glob("*.csv")) if c != csv and {"image", "lesion_id"} <= _csv_header(c)]
    if groupings:
        groups = _read_csv(groupings[0])
        lookup = dict(zip(groups["image"].str.strip(), groups["lesion_id"].str.strip()))
        missing = [i for i in image_ids if i not in lookup]
        if missing:
            raise DataError(f"{groupings[0]}: no lesion_id for image {missing[0]} (and {len(missing) - 1} more)")
        lesion_ids = image_ids.map(lookup)
    else:
        warnings.warn(
            f"{folder}: no lesion-groupings CSV (image,lesion_id); each image is treated as its own lesion, "
            "so images of one lesion may fall on both sides of the split",
            stacklevel=2,
        )
    records = pd.DataFrame(
        {"image_id": image_ids, "lesion_id": lesion_ids, "dx": dx, "label": dx.map(CLASSES.index).astype(np.int64)}
    )
    _check_lesions(csv, records)
    return Source("isic2018", folder, _attach_files(csv, folder, records), csv)


def read_medmnist(npz: Path | str) -> Source:
    """Records of a MedMNIST DermaMNIST .npz; the official split is kept in column `split`."""
    npz = Path(npz)
    arrays = load_medmnist_arrays(npz)
    rows = []
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"]
        ids = [f"{split}_{i}" for i in range(len(labels))]
        rows.append(pd.DataFrame({"image_id": ids, "lesion_id": ids, "label": labels, "split": split}))
    records = pd.concat(rows, ignore_index=True)
    records["dx"] = [CLASSES[i] for i in records["label"]]
    return Source("medmnist", npz, records)


def load_medmnist_arrays(npz: Path | str) -> dict[str, np.ndarray]:
    """{key: array} of a DermaMNIST npz, validated: labels (N,) int64 in range, images (N,H,W,3) uint8."""
    try:
        with np.load(npz) as z:
            missing = [k for k in MEDMNIST_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{npz}: missing keys {', '.join(missing)} (has {', '.join(z.files) or 'none'})")
            arrays = {k: z[k] for k in MEDMNIST_KEYS}
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{npz}: cannot read as .npz ({e})") from e
    for split in ("train", "val", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        if len(images) != len(labels):
            raise DataError(
                f"{npz}: {split}_images has {len(images)} images but {split}_labels has {len(labels)} labels"
            )
        if images.ndim == 3:  # grayscale MedMNIST sets: replicate to RGB
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{npz}: {split}_images has shape {images.shape}, expected (N, H, W, 3)")
        bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
        if bad.size:
            raise DataError(f"{npz}: {split}_labels[{bad[0]}] = {labels[bad[0]]} is not a class index 0..{len(CLASSES) - 1}")
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return arrays


def fingerprint(source: Source) -> str:
    """SHA-256 of what the source's records hold: ids, labels and every image's bytes.

    Two copies of the same data give the same fingerprint wherever they lie; any relabelled,
    added, removed or edited image changes it.
    """
    h = hashlib.sha256()
    h.update(source.layout.encode())
    cols = ["image_id", "lesion_id", "label"] + (["split"] if "split" in source.records else [])
    h.update(source.records[cols].to_csv(index=False).encode())
    if "file" in source.records:
        for f in source.records["file"]:
            h.update(Path(f).read_bytes())
    else:
        h.update(Path(source.path).read_bytes())
    return h.hexdigest()
