"""The `poison` step: flip training labels from a source class to a target class, train on
them, and measure the damage on the clean test split."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import plots, tracking
from ..config import PoisonConfig, TrainConfig, narrow
from ..data import CLASSES, class_index, load_dataset
from ..errors import ConfigError
from ..models.training import set_seed
from .train import headline, registered_name, train_in_run

log = logging.getLogger(__name__)

SWEEP_METRICS = ("clean_accuracy", "clean_macro_recall", "clean_macro_specificity", "clean_health_accuracy",
                 "clean_fnr", "clean_npv")


def poison_labels(y: np.ndarray, source: int, target: int, fraction: float,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Relabel round(fraction * n_source) images of class `source` as `target`.

    y: (N,) int labels. Returns (poisoned copy of y, sorted indices of the flipped images).
    The images are drawn without replacement by a generator seeded with `seed`.
    """
    y = np.asarray(y)
    candidates = np.flatnonzero(y == source)
    n = int(round(fraction * len(candidates)))
    flipped = np.sort(np.random.default_rng(seed).choice(candidates, size=n, replace=False))
    poisoned = y.copy()
    poisoned[flipped] = target
    return poisoned, flipped


@dataclass
class PoisonResult:
    run_id: str  # the sweep's parent run, or the single run
    runs: dict  # fraction -> TrainResult

    @property
    def output(self) -> str:
        """One fraction: its model; a sweep: its parent run (no one model stands for it)."""
        return next(iter(self.runs.values())).output if len(self.runs) == 1 else self.run_id


def _one(config, data, source, target, fraction, on_epoch=None):
    poisoned, flipped = poison_labels(data.y["train"], source, target, fraction, config.seed)
    if len(flipped) == 0:
        raise ConfigError(f"poison fraction {fraction} flips no image: the training split holds "
                          f"{int(np.sum(data.y['train'] == source))} {CLASSES[source]} images")
    train_ids = data.table.loc[data.table["split"] == "train", "image_id"].to_numpy()
    tracking.log_params({"poison.source": CLASSES[source], "poison.target": CLASSES[target],
                         "poison.fraction": fraction, "poison.n_flipped": len(flipped)})
    tracking.log_text("image_id\n" + "\n".join(train_ids[flipped]) + "\n", "poison/flipped.csv")
    result = train_in_run(tracking.active_run_id(), narrow(config, TrainConfig), data, y_train=poisoned,
                          registered_as=f"{registered_name(config.arch)}-poisoned",
                          extra_tags={"poison": f"{CLASSES[source]}->{CLASSES[target]} {fraction}"},
                          on_epoch=on_epoch)
    log.info("poison %s -> %s at %g (%d labels flipped): %s", CLASSES[source], CLASSES[target], fraction,
             len(flipped), headline(result))
    return result


def run_poison(config: PoisonConfig, *,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> PoisonResult:
    """One poisoned training per fraction; several fractions run as nested runs under a parent
    that draws every metric against the fraction (the thesis' Figure 4.6). on_epoch(epoch,
    logs): called after each training epoch (see run_train)."""
    source, target = class_index(config.source), class_index(config.target)
    fractions = config.poison_fractions
    tags = {"medrobust.step": "poison", "medrobust.arch": config.arch}
    name = config.run_name or f"poison-{config.source}-{config.target}"
    with tracking.run(config.experiment, run_name=name, tags=tags) as parent:
        set_seed(config.seed)
        data = load_dataset(config.data)
        if len(fractions) == 1:
            return PoisonResult(parent, {fractions[0]: _one(config, data, source, target, fractions[0], on_epoch)})
        tracking.log_params({"poison.source": config.source, "poison.target": config.target,
                             "poison.fractions": ",".join(str(f) for f in fractions)})
        tracking.log_dataset(data, context="train")
        runs = {}
        for fraction in fractions:
            with tracking.run(config.experiment, run_name=f"{name}-{fraction}", tags=tags):
                runs[fraction] = _one(config, data, source, target, fraction, on_epoch)
        series = {k: [runs[f].metrics[k] for f in fractions] for k in SWEEP_METRICS}
        tracking.log_json({"fractions": list(fractions), **series}, "poison/sweep.json")
        fig = plots.sweep_figure(fractions, series, f"{config.source} relabelled as {config.target}")
        tracking.log_figure(fig, "poison/sweep.png")
        plots.close(fig)
    return PoisonResult(parent, runs)


def referred(settings: dict[str, Any]) -> str | None:
    """Why a pipeline step may not take this poison step's output as a model (its `with`
    settings): a sweep's output is its parent run. None when it may."""
    fractions = settings.get("poison_fractions")
    if isinstance(fractions, list) and len(fractions) != 1 or isinstance(fractions, str) and "," in fractions:
        return "a poison sweep, not one model: give it one fraction per instance (grid: {poison_fractions: [[0.1], [0.3]]})"
    return None
