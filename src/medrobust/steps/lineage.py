"""What a model has seen: the images its training runs trained or validated on, read from the
`data/split.csv` each of them logged, along the model's lineage (a defended model's network,
its network's network, ...). Evaluation refuses a test set that holds any of them: the images
are named by id, so a subset, another split seed or an ISIC 2018 folder that holds HAM10000's
training images are caught alike."""

import io
import logging
from collections.abc import Sequence

import pandas as pd

from .. import tracking
from ..data import Dataset
from ..errors import ConfigError, DataError, ModelError

log = logging.getLogger(__name__)

# What a model has seen of its data: train, and val, which chose its epoch and operating
# threshold (an evaluation on val itself is checked against train only).
SEEN_SPLITS = {"test": ("train", "val"), "all": ("train", "val"), "val": ("train",)}
MAX_DEPTH = 8


def seen_images(model_uri: str, splits: Sequence[str] = ("train", "val")) -> set[str]:
    """Image ids the model at `model_uri` and the models it was made from had in `splits` of
    their data; set() where no run of the lineage logged its split (a model made elsewhere)."""
    seen, uri = set(), model_uri
    for _ in range(MAX_DEPTH):
        if not uri or uri == "none":
            break
        try:
            run_id = tracking.model_run_id(uri)
            params = tracking.get_run(run_id)["params"] if run_id else None
        except (ModelError, ConfigError):  # a model logged elsewhere, or its run not in this store
            break
        if params is None:
            break
        try:
            table = pd.read_csv(io.StringIO(tracking.load_text_artifact(run_id, "data/split.csv")))
            seen |= set(table.loc[table["split"].isin(splits), "image_id"].astype(str))
        except ModelError:
            log.debug("run %s logged no data/split.csv", run_id)
        uri = params.get("model_uri")
    return seen


def check_unseen(model_uri: str, data: Dataset, split: str = "test") -> None:
    """DataError when `data`'s `split` (every image for "all") holds images the model at
    `model_uri` trained or validated on, with their count and a few ids."""
    if split not in SEEN_SPLITS:  # the train split itself: seen by definition, measured on purpose
        return
    table = data.table if split == "all" else data.table[data.table["split"] == split]
    seen = seen_images(model_uri, SEEN_SPLITS[split])
    leaked = sorted(set(table["image_id"].astype(str)) & seen)
    if leaked:
        raise DataError(f"{data.source}: {len(leaked)} of the {len(table)} images of its {split} split were used to "
                        f"train or validate {model_uri} ({', '.join(leaked[:3])}{', ...' if len(leaked) > 3 else ''}); "
                        "evaluate on images the model has not seen: the same data, split seed and fractions it was "
                        "trained with, or an external set without its images")
