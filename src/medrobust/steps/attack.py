"""The `attack` step: a model URI -> adversarial examples of a split -> clean and attacked metrics."""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .. import attacks, metrics, plots, tracking
from ..config import AttackConfig, flatten
from ..data import CLASSES, class_index, load_dataset, malignant_mask, stratified_subset
from ..errors import ConfigError, ModelError
from ..evaluation.worst import worst_predictions
from ..models.training import predict_logits, set_seed
from .logbook import log_evaluation

log = logging.getLogger(__name__)


@dataclass
class AttackResult:
    run_id: str
    metrics: dict
    perturbation: np.ndarray | None


def _load_models(config):
    """(target, attacking model) with every check done before any work.

    A defended model (from the defend step) is attacked as a whole: its input
    transformations run in the forward pass and are passed by BPDA in the backward pass
    (DefendedClassifier.as_keras). Its detector, if any, is measured by the defend step.
    """
    target = tracking.load_classifier(config.model_uri).as_keras()
    if not config.attack_model_uri or config.attack_model_uri == config.model_uri:
        return target, target
    surrogate = tracking.load_classifier(config.attack_model_uri).as_keras()
    if surrogate.input_shape[1:] != target.input_shape[1:] or surrogate.output_shape[-1] != target.output_shape[-1]:
        raise ModelError(
            f"surrogate {config.attack_model_uri} takes {surrogate.input_shape[1:]} and outputs "
            f"{surrogate.output_shape[-1]} classes, but target {config.model_uri} takes {target.input_shape[1:]} "
            f"and outputs {target.output_shape[-1]}"
        )
    return target, surrogate


def method_settings() -> tuple[str, ...]:
    """The AttackConfig fields that only some attacks take (steps, uap_delta, ...): those some
    registered attack accepts, beside the common seed and batch_size."""
    accepted = {p for spec in attacks.ATTACKS.values() for p in spec.params}
    return tuple(f.name for f in fields(AttackConfig) if f.name in accepted and f.name not in ("seed", "batch_size"))


def method_params(config: AttackConfig) -> dict[str, Any]:
    """The attack's own settings from the config. A setting the method does not take, changed
    from its default, is refused by name: it would otherwise be ignored without a word."""
    spec = attacks.ATTACKS[config.method]
    default = AttackConfig()
    names = method_settings()
    unused = [n for n in names if n not in spec.params and getattr(config, n) != getattr(default, n)]
    if unused:
        own = [n for n in names if n in spec.params]
        raise ConfigError(f"attack {config.method} takes no {', '.join(unused)}; its own settings are "
                          f"{', '.join(own) if own else 'none'}", unused)
    out = {n: getattr(config, n) for n in names if n in spec.params}
    if "health_map" in spec.params:  # the health attack reads which classes are malignant from the data's map
        out["health_map"] = config.data.health_map
    return out


def run_attack(config: AttackConfig) -> AttackResult:
    """Attack the model at config.model_uri on one split and log everything; see AttackResult."""
    target_class = None if config.target is None else class_index(config.target)
    norm = attacks.check_attack(config.method, config.eps, config.norm, target_class)
    params = method_params(config)
    model, attacker = _load_models(config)
    threat = "white-box" if attacker is model else "transfer"
    tags = {"medrobust.step": "attack", "medrobust.method": config.method, "medrobust.threat_model": threat}
    # The images follow the model's input size; log that size, not the CLI default.
    config = replace(config, data=replace(config.data, image_size=int(model.input_shape[1])))
    with tracking.run(config.experiment, run_name=config.run_name or f"attack-{config.method}", tags=tags) as run_id:
        tracking.log_params(flatten(config) | {"threat_model": threat})
        set_seed(config.seed)
        data = load_dataset(config.data)
        x, y = data.x[config.split], data.y[config.split]
        if config.max_images:
            keep = stratified_subset(y, config.max_images, seed=config.seed)
            x, y = x[keep], y[keep]
        tracking.log_params({"n_images": len(x)})
        tracking.log_dataset(data, context=config.split)

        pred_clean = predict_logits(model, x).argmax(axis=1)
        log.info("attack: %s (%s, eps %.4f, L-%s) on %d %s images", config.method, threat, config.eps, norm, len(x),
                 config.split)
        start = time.perf_counter()
        x_adv, perturbation = attacks.craft(config.method, attacker, x, config.eps, norm, target=target_class, y=y,
                                            seed=config.seed, batch_size=config.batch_size, **params)
        seconds = time.perf_counter() - start
        pred_adv = predict_logits(model, x_adv).argmax(axis=1)

        values = log_evaluation(y, pred_clean, config.data.health_map, condition="clean")
        # Counted as RobustBench counts: per image the worse of clean and attacked (the clean image
        # lies in every ball), so an attacked figure never beats the clean one; the fooling rate
        # and the histograms stay on the raw adversarial predictions.
        counted = worst_predictions(y, [pred_clean, pred_adv], malignant_mask(config.data.health_map))
        values |= log_evaluation(y, counted, config.data.health_map, condition="adv")
        counts = np.bincount(pred_adv, minlength=len(CLASSES))
        extra = {
            "fooling_rate": metrics.fooling_rate(pred_clean, pred_adv),
            "attack_success_rate": metrics.attack_success_rate(y, pred_clean, pred_adv, target_class),
            "attack_seconds": seconds,
            "attack_images_per_second": len(x) / max(seconds, 1e-9),
            **{f"perturbation_{k}": v for k, v in attacks.perturbation_sizes(x, x_adv).items()},
            **{f"adv_predicted_share_{c}": n / len(x) for c, n in zip(CLASSES, counts)},
        }
        tracking.log_metrics(extra)
        values |= extra
        tracking.log_json({"classes": list(CLASSES), "clean": np.bincount(pred_clean, minlength=len(CLASSES)).tolist(),
                           "adversarial": counts.tolist()}, "predictions/class_histogram.json")
        fig = plots.examples_figure(x, x_adv, y, pred_clean, pred_adv, CLASSES, config.eps)
        tracking.log_figure(fig, "examples/grid.png")
        plots.close(fig)
        if perturbation is not None:
            tracking.log_array(perturbation, "perturbation/uap.npy")
            fig = plots.perturbation_figure(perturbation, config.eps)
            tracking.log_figure(fig, "perturbation/uap.png")
            plots.close(fig)
    log.info("attack %s %s/255 (%s): run %s  accuracy %.3f -> %.3f  FNR %.3f -> %.3f  fooling rate %.3f",
             config.method, f"{config.eps * 255:g}", threat, run_id, values["clean_accuracy"], values["adv_accuracy"],
             values["clean_fnr"], values["adv_fnr"], values["fooling_rate"])
    return AttackResult(run_id, values, perturbation)


def route(grid: Mapping[str, list[Any]], values: dict[str, Any]) -> dict[str, Any]:
    """A pipeline instance's settings (`values`; `grid`: the settings its step varies). Where the
    grid varies the method, a method's own setting given once (`max_steps: 60` beside `method:
    [fgsm, uap_fast]`) goes to the methods that take it; one that no method of the grid takes is
    an error. With one method, a setting it does not take stays an error (method_params)."""
    if "method" not in grid:
        return values
    methods = [m for m in grid["method"] if m in attacks.ATTACKS]  # an unknown one: check_attack names it
    taken = set().union(*(attacks.ATTACKS[m].params for m in methods))
    stray = [k for k in values if k in method_settings() and k not in taken]
    if stray and methods:
        raise ConfigError(f"{stray[0]} is taken by none of the attack methods {', '.join(methods)}", stray[:1])
    takes = attacks.ATTACKS[values["method"]].params if values.get("method") in attacks.ATTACKS else ()
    return {k: v for k, v in values.items() if k in takes or k not in method_settings()}


def check_request(config: AttackConfig) -> None:
    """What an AttackConfig cannot check itself, before any run: the method, budget and norm
    against the attack registry, and the settings the method takes."""
    attacks.check_attack(config.method, config.eps, config.norm)
    method_params(config)
