"""Class names, their canonical order and the health (malignant / benign) maps.

The canonical order is MedMNIST DermaMNIST's, so a DermaMNIST label is already an index here.
"""

import numpy as np

from ..errors import ConfigError

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
N_CLASSES = len(CLASSES)

# ISIC 2018 Task 3 ground-truth columns, in the order the official CSVs use.
ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

# clinical: the three malignant (or pre-malignant) classes.
# thesis: the thesis counted nv as cancerous too ("4 cancerous classes, 86 % of the pictures").
HEALTH_MAPS = {
    "clinical": ("akiec", "bcc", "mel"),
    "thesis": ("akiec", "bcc", "mel", "nv"),
}


def class_index(name: str) -> int:
    """Index of class `name` (case-insensitive) in CLASSES; ValueError naming the choices."""
    key = str(name).strip().lower()
    if key not in CLASSES:
        raise ConfigError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(key)


def malignant_mask(health_map: str = "clinical") -> np.ndarray:
    """Boolean array of shape (N_CLASSES,): True where the class counts as malignant."""
    if health_map not in HEALTH_MAPS:
        raise ConfigError(f"unknown health_map {health_map!r}; expected one of {', '.join(HEALTH_MAPS)}")
    return np.array([c in HEALTH_MAPS[health_map] for c in CLASSES])
