"""The `defend` step: a model URI and a defense spec -> a defended model (one MLflow model,
registered @candidate), measured at once, clean and under a small attack suite."""

import sys
from dataclasses import dataclass, replace

import keras
import numpy as np

from .. import attacks, metrics, plots, tracking
from ..config import DefendConfig, TrainConfig, flatten
from ..data import CLASSES, N_CLASSES, load_dataset, malignant_mask
from ..defenses import DEFENSES, DefendedClassifier, input_chain, parse_spec
from ..defenses.detector import train_detector
from ..defenses.distill import distill
from ..defenses.retrain import retrain_rounds, train_on_the_fly
from ..models.training import predict_logits, set_seed
from .report import evaluate, format_table, log_evaluation

# The figures a registered defended version carries as tags.
VERSION_TAGS = ("clean_accuracy", "clean_fnr", "adv_fgsm_transfer_accuracy", "adv_fgsm_transfer_fnr",
                "adv_fgsm_whitebox_accuracy", "adv_fgsm_whitebox_fnr")


@dataclass
class DefendResult:
    run_id: str
    model_uri: str  # runs:/<run_id>/model, a pyfunc model that applies the defense
    registered_name: str | None
    version: int | None
    metrics: dict
    table: dict  # {column title: {metric: value}}, the before/after table


def check_request(config):
    """Every check before any work: (defense names, parent network)."""
    names = parse_spec(config.defense)
    if not names:
        raise ValueError("no defense given; name one or more of " + ", ".join(DEFENSES) + " joined by '+'")
    requests = [(m, config.eval_eps) for m in config.eval_attacks]
    if "retrain" in names:
        requests += [(m, config.retrain_eps) for m in config.retrain_attacks]
        if config.on_the_fly and (len(config.retrain_attacks) != 1 or config.retrain_attacks[0] not in ("fgsm", "pgd")):
            raise ValueError(f"on-the-fly retraining takes one attack, fgsm or pgd; got {', '.join(config.retrain_attacks)}")
    if "detector" in names:
        requests += [(m, config.detector_eps) for m in config.detector_attacks]
    for method, eps in requests:
        attacks.check_attack(method, eps, "inf")
    parent = tracking.load_classifier(config.model_uri)
    if parent.chain or parent.detector is not None:
        raise ValueError(f"{config.model_uri} is already a defended model; defend its undefended network instead "
                         f"({parent.info.get('parent_model_uri', 'the model it was made from')})")
    shape = parent.input_shape
    if len(shape) != 3 or shape[-1] != 3 or parent.n_classes != N_CLASSES:
        raise ValueError(f"{config.model_uri} is not a skin-lesion classifier: it takes {shape} and outputs "
                         f"{parent.n_classes} values, expected (H, W, 3) images and {N_CLASSES} classes")
    return names, parent.network


def copy_network(network):
    twin = keras.models.clone_model(network)
    twin.set_weights(network.get_weights())
    return twin


def _epoch_logger(prefix):
    def log(epoch, logs):
        tracking.log_metrics({f"{prefix}_{k}": v for k, v in logs.items() if isinstance(v, (int, float))}, step=epoch)
    return log


def _log_history(history, name):
    tracking.log_json(history, f"training/{name}_history.json")
    if "loss" in history and history["loss"]:
        fig = plots.training_curves_figure(history)
        tracking.log_figure(fig, f"training/{name}_curves.png")
        plots.close(fig)


def build_defense(names, parent, data, config):
    """The DefendedClassifier of spec `names` made from network `parent`, in DEFENSES' order;
    every training curve is logged as it goes."""
    train = TrainConfig(data=config.data, epochs=1, batch_size=config.batch_size, learning_rate=config.learning_rate,
                        seed=config.seed, experiment=config.experiment)
    attack_params = {"uap_fast": {"max_steps": config.uap_max_steps, "seed": config.seed}}
    x_train, y_train, x_val, y_val = data.x["train"], data.y["train"], data.x["val"], data.y["val"]
    network, detector = copy_network(parent), None
    if "distill" in names:
        print(f"defend: distillation at T={config.temperature:g}", file=sys.stderr)
        network, history = distill(network, x_train, y_train, x_val, y_val, train, config.temperature,
                                   config.distill_epochs, on_epoch=_epoch_logger("distill"))
        _log_history(history, "distill")
    if "retrain" in names:
        x_r, y_r = x_train, y_train
        if config.retrain_on == "train+val":
            x_r, y_r = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
        if config.on_the_fly:
            history = train_on_the_fly(network, x_r, y_r, train, config.retrain_attacks[0], config.retrain_eps,
                                       config.rounds * config.epochs_per_round, seed=config.seed,
                                       on_epoch=_epoch_logger("retrain"))
        else:
            history = retrain_rounds(network, x_r, y_r, x_val, y_val, train, config.retrain_attacks, config.retrain_eps,
                                     config.rounds, config.ratio, config.epochs_per_round, config.seed, attack_params,
                                     on_epoch=_epoch_logger("retrain"))
        _log_history(history, "retrain")
    if "detector" in names:
        print("defend: training the detector", file=sys.stderr)
        detector, history = train_detector(network, x_train, x_val, train, config.detector_attacks,
                                           config.detector_eps, config.detector_epochs, attack_params,
                                           on_epoch=_epoch_logger("detector"))
        _log_history(history, "detector")
    chain = input_chain(names, {"llt": {"quality": config.llt_quality}, "jpeg": {"quality": config.jpeg_quality},
                                "smooth": {"window": config.smooth_window}, "squeeze": {"bits": config.squeeze_bits}})
    info = {"spec": "+".join(names), "families": [DEFENSES[n] for n in names], "parent_model_uri": config.model_uri}
    return DefendedClassifier(network, chain, detector, config.detector_threshold, info)


def with_rejection(y_true, y_pred, rejected, health_map):
    """(strict, referred) predictions for rejected images: strict turns each into an error
    that also flips its health call (a rejected cancer counts as missed); referred makes it
    correct (a rejected image goes to a doctor, who is assumed right)."""
    malignant = malignant_mask(health_map)
    strict, referred = y_pred.copy(), y_pred.copy()
    other_call = {bool(m): int(np.flatnonzero(malignant != m)[0]) for m in (True, False)}
    for i in np.flatnonzero(rejected):
        strict[i] = other_call[bool(malignant[y_true[i]])]
        referred[i] = y_true[i]
    return strict, referred


def measure(condition, y, pred, rejected, health_map, reference=None):
    """Log the metrics of one condition; returns (them, them without the condition prefix).
    rejected: the detector's verdicts (None without a detector); reference: the clean
    predictions, for the fooling rate of an attacked condition."""
    if rejected is not None:
        strict, referred = with_rejection(y, pred, rejected, health_map)
        values = log_evaluation(y, strict, health_map, condition=condition)
        extra, _, _ = evaluate(y, referred, health_map, prefix=f"{condition}_referred_")
        extra[f"{condition}_rejected_rate"] = float(np.mean(rejected))
        tracking.log_metrics(extra)
        values |= extra
    else:
        values = log_evaluation(y, pred, health_map, condition=condition)
    if reference is not None:
        values[f"{condition}_fooling_rate"] = metrics.fooling_rate(reference, pred)
        tracking.log_metrics({f"{condition}_fooling_rate": values[f"{condition}_fooling_rate"]})
    prefix = f"{condition}_"
    return values, {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def attack_suite(parent, defended, x, y, config):
    """Clean and attacked metrics of the parent and the defended model; returns (all metrics,
    the before/after table)."""
    health_map = config.data.health_map
    suite_params = {"uap_fast": {"max_steps": config.uap_max_steps, "seed": config.seed}}
    values, table = {}, {}
    parent_clean = predict_logits(parent, x).argmax(axis=1)
    clean = defended.logits(x).argmax(axis=1)
    v, table["parent clean"] = measure("parent_clean", y, parent_clean, None, health_map)
    values |= v
    v, table["defended clean"] = measure("clean", y, clean, _rejected(defended, x), health_map)
    values |= v
    attacked_model = defended.as_keras()
    for method in config.eval_attacks:
        params = suite_params.get(method, {}) | {"seed": config.seed}
        print(f"defend: {method} crafted on the parent (transfer) and on the defended model (white-box, BPDA)",
              file=sys.stderr)
        x_transfer, _ = attacks.craft(method, parent, x, config.eval_eps, **params)
        v, table[f"parent {method}"] = measure(f"parent_{method}", y, predict_logits(parent, x_transfer).argmax(axis=1),
                                               None, health_map, reference=parent_clean)
        values |= v
        v, table[f"{method} transfer"] = measure(f"adv_{method}_transfer", y, defended.logits(x_transfer).argmax(axis=1),
                                                 _rejected(defended, x_transfer), health_map, reference=clean)
        values |= v
        x_white, _ = attacks.craft(method, attacked_model, x, config.eval_eps, **params)
        white = defended.logits(x_white).argmax(axis=1)
        v, table[f"{method} white-box"] = measure(f"adv_{method}_whitebox", y, white, _rejected(defended, x_white),
                                                  health_map, reference=clean)
        values |= v
        fig = plots.examples_figure(x, x_white, y, clean, white, CLASSES, config.eval_eps)
        tracking.log_figure(fig, f"examples/{method}_whitebox.png")
        plots.close(fig)
    return values, table


def _rejected(defended, x):
    return defended.rejected(x) if defended.detector is not None else None


def run_defend(config: DefendConfig) -> DefendResult:
    """Build the defense `config.defense` on the model at `config.model_uri`, measure it, log
    and register it; see DefendResult."""
    names, parent = check_request(config)
    spec = "+".join(names)
    config = replace(config, data=replace(config.data, image_size=int(parent.input_shape[1])))
    tags = {"medrobust.step": "defend", "medrobust.defense": spec, "medrobust.parent_model_uri": config.model_uri}
    with tracking.run(config.experiment, run_name=config.run_name or f"defend-{spec}", tags=tags) as run_id:
        tracking.log_params(flatten(config) | {"defense_parts": ",".join(names),
                                              "defense_families": ",".join(DEFENSES[n] for n in names)})
        set_seed(config.seed)
        data = load_dataset(config.data)
        tracking.log_params({"data.fingerprint": data.fingerprint})
        defended = build_defense(names, parent, data, config)
        x, y = data.x["test"], data.y["test"]
        if config.max_images:
            x, y = x[: config.max_images], y[: config.max_images]
        values, table = attack_suite(parent, defended, x, y, config)
        text = format_table(table)
        tracking.log_text(text, "report/before_after.txt")
        tracking.log_json(table, "report/before_after.json")
        model_uri, logged_uri = tracking.log_defended_model(defended)
        name = version = None
        if config.register:  # last, so a failure anywhere above registers nothing
            name = f"medrobust-{parent.name}"
            version_tags = {k: f"{values[k]:.4f}" for k in VERSION_TAGS if k in values}
            version_tags |= {"defense": spec, "parent_model_uri": config.model_uri, "data_fingerprint": data.fingerprint}
            version = tracking.register_model(logged_uri, name, tags=version_tags, alias=config.alias)
    return DefendResult(run_id, model_uri, name, version, values, table)
