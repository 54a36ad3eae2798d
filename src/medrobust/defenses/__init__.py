"""Defenses: a name picks a family and a builder; a spec such as `retrain+llt` combines them.

The three families of the thesis' related work:
- modify the model: `distill` (defensive distillation);
- modify the data: `retrain` (adversarial retraining; on-the-fly as an option) and the input
  transformations `llt` (WebP + flip, the thesis' LLT), `jpeg`, `smooth`, `squeeze`;
- add a model: `detector` (rejects inputs it calls adversarial).

Whatever order a spec is written in, the parts apply in DEFENSES' order: first what changes
the network (distill, then retrain hardens the student), then the detector (trained against that
final network; it sees the raw input), then the input transformations at prediction time, in
the order squeeze, smooth, jpeg, llt (transforms.apply_chain).
"""

from .defended import DefendedClassifier, load_defended
from .transforms import TRANSFORMS, apply_chain

# name -> family, in the order the parts of a combination are applied.
DEFENSES = {
    "distill": "model",
    "retrain": "data",
    "detector": "add-model",
    "squeeze": "input",
    "smooth": "input",
    "jpeg": "input",
    "llt": "input",
}


def parse_spec(spec):
    """`retrain+llt` -> ('retrain', 'llt') in application order; 'none' -> ().

    Raises ValueError for an empty part, an unknown defense or one named twice.
    """
    text = str(spec).strip().lower()
    if text in ("none", ""):
        return ()
    parts = [p.strip() for p in text.split("+")]
    for part in parts:
        if part not in DEFENSES:
            raise ValueError(f"unknown defense {part!r} in {spec!r}; expected names from {', '.join(DEFENSES)} "
                             "joined by '+' (e.g. retrain+llt)")
    if len(set(parts)) != len(parts):
        raise ValueError(f"defense spec {spec!r} names a defense twice")
    return tuple(name for name in DEFENSES if name in parts)


def input_chain(names, params):
    """The ((transform, {params}), ...) chain of the input transformations among `names`;
    `params` maps a transform to its settings (e.g. {'llt': {'quality': 75}})."""
    return tuple((name, dict(TRANSFORMS[name][1], **params.get(name, {}))) for name in names if name in TRANSFORMS)


__all__ = ["DEFENSES", "DefendedClassifier", "TRANSFORMS", "apply_chain", "input_chain", "load_defended", "parse_spec"]
