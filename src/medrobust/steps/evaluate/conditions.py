"""What an evaluate request measures: the suites' attacked conditions, the natural
corruptions, and every check made before any work."""

from typing import TYPE_CHECKING, Any

from ... import attacks, tracking
from ...config import EvaluateConfig, SuiteConfig
from ...data import CLASSES, N_CLASSES
from ...errors import ModelError
from ...evaluation import Condition
from ...evaluation.adaptive import adaptive_notes
from ...evaluation.corruptions import CORRUPTIONS, check_corruptions

if TYPE_CHECKING:
    from ...defenses import DefendedClassifier

MODEL, SURROGATE = "target", "surrogate"  # the names of the two models in the records

def attack_params(config: SuiteConfig, method: str) -> dict[str, Any]:
    """The step-level settings of an attack (each attack gets only what it takes)."""
    return {"pgd": {"steps": config.pgd_steps, "random_start": True}, "cw_pgd": {"steps": config.cw_steps},
            "uap_fast": {"max_steps": config.uap_max_steps}, "uap": {"uap_max_iter": config.uap_max_iter},
            "apgd": {"steps": config.apgd_steps}, "apgd_t": {"steps": config.apgd_steps, "n_targets": config.apgd_targets},
            "square": {"queries": config.square_queries},
            "autoattack": {"steps": config.apgd_steps, "n_targets": config.apgd_targets,
                           "queries": config.square_queries},
            "health": {"steps": config.apgd_steps, "restarts": config.health_restarts,
                       "health_map": config.data.health_map}}.get(method, {})


def suite_conditions(config: SuiteConfig, has_surrogate: bool) -> tuple[tuple[Condition, ...], list[str]]:
    """(conditions, notes): the Conditions of config.suites in order, without repeats; a
    transfer condition without a surrogate runs white-box instead, and a note says so."""
    wanted, notes = [], []

    def add(method, eps, threat):
        if threat == "transfer" and not has_surrogate:
            threat = "whitebox"
            note = "no surrogate (a plain model has no parent; give --attack-model-uri): transfer attacks run white-box"
            if note not in notes:
                notes.append(note)
        wanted.append(Condition(method, float(eps), threat, "inf", attack_params(config, method)))

    for name in config.suites:
        if name in ("thesis", "full"):
            for method in ("fgsm", "uap", "uap_fast"):
                add(method, config.eps, "transfer")
        if name in ("standard", "full"):  # AutoAttack white-box only: its Square queries the target itself
            for method in ("fgsm", "pgd", "autoattack"):
                add(method, config.eps, "whitebox")
            for method in ("fgsm", "pgd"):
                add(method, config.eps, "transfer")
        if name in ("adaptive", "full"):  # white-box through the whole defense (BPDA); the joint attack aside
            for method in ("fgsm", "pgd", "apgd"):
                add(method, config.eps, "whitebox")
        if name == "autoattack":
            add("autoattack", config.eps, "whitebox")
        if name in ("health", "full"):
            add("health", config.eps, "whitebox")
        if name == "full":
            for method in config.curve_attacks:
                for eps in config.curve_eps:
                    if eps > 0:  # the clean row is every curve's first point
                        add(method, eps, "whitebox")
    unique = []
    for c in wanted:
        if all((c.attack, c.eps, c.threat) != (u.attack, u.eps, u.threat) for u in unique):
            unique.append(c)
    return tuple(unique), notes


def wants_corruptions(config: SuiteConfig) -> bool:
    return "corruptions" in config.suites or "full" in config.suites


def corruption_names(config: SuiteConfig) -> tuple[str, ...]:
    """The corruptions measured: config.corruptions, or every one when none is named."""
    return config.corruptions or tuple(CORRUPTIONS)


def check_request(config: EvaluateConfig) -> tuple[tuple[Condition, ...], list[str], "DefendedClassifier",
                                                   "DefendedClassifier | None"]:
    """Every check before any work: (conditions, notes, model, surrogate or None)."""
    for method in config.curve_attacks:
        attacks.check_attack(method, max(config.curve_eps), "inf")
    if wants_corruptions(config):
        check_corruptions(corruption_names(config), config.severities)
    model = tracking.load_classifier(config.model_uri)
    if model.n_classes != N_CLASSES or len(model.input_shape) != 3:
        raise ModelError(f"{config.model_uri} outputs {model.n_classes} classes for inputs {model.input_shape}; the "
                         f"data has the {N_CLASSES} classes {', '.join(CLASSES)}")
    surrogate_uri = config.attack_model_uri or model.info.get("parent_model_uri")
    surrogate = tracking.load_classifier(surrogate_uri) if surrogate_uri else None
    if surrogate is not None and (surrogate.input_shape != model.input_shape or surrogate.n_classes != model.n_classes):
        raise ModelError(f"surrogate {surrogate_uri} takes {surrogate.input_shape} and outputs {surrogate.n_classes} "
                         f"classes; {config.model_uri} takes {model.input_shape} and outputs {model.n_classes}")
    conditions, notes = suite_conditions(config, surrogate is not None)
    if "adaptive" in config.suites or "full" in config.suites:
        notes += adaptive_notes(model)
    for c in conditions:
        c.check()
    if config.split == "all" and config.threshold is None:
        notes.append("--split all has no validation split to choose the operating point on, and no --threshold was "
                     "given: the report has no operating-point figures")
    return conditions, notes, model, surrogate
