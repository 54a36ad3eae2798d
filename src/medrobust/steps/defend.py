"""The `defend` step: a model URI and a defense spec -> a defended model (one MLflow model,
registered with config.alias, @candidate by default), measured at once, clean and under a small
attack suite, transfer from the parent and white-box."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import keras

from .. import attacks, plots, tracking
from ..config import DefendConfig, flatten
from ..data import CLASSES, N_CLASSES, Dataset, load_dataset, stratified_subset
from ..defenses import DEFENSES, DefendedClassifier, Hooks, applicable, check_settings, parse_spec
from ..defenses.retrain import ON_THE_FLY_METHODS
from ..errors import ConfigError, ModelError
from ..evaluation import ENSEMBLE, flat_metrics, measure, records_csv, suite, wide_table
from ..models.training import set_seed
from .logbook import format_table, log_confusion, operating_point

log = logging.getLogger(__name__)

# The figures a registered defended version carries as tags.
VERSION_TAGS = ("clean_accuracy", "clean_fnr", "adv_fgsm_transfer_accuracy", "adv_fgsm_transfer_fnr",
                "adv_fgsm_whitebox_accuracy", "adv_fgsm_whitebox_fnr")
# The names of the two models in the records: the one measured and the parent it came from.
DEFENDED, PARENT = "defended", "parent"


@dataclass
class DefendResult:
    run_id: str
    model_uri: str  # runs:/<run_id>/model, a pyfunc model that applies the defense
    registered_name: str | None
    version: int | None
    metrics: dict  # the flat metrics logged: parent_clean_*, clean_*, parent_<m>_*, adv_<m>_<threat>_*
    table: dict  # {column title: {metric: value}}, the before/after table
    records: list = field(default_factory=list)  # long format: {model, attack, threat, eps, metric, value}

    @property
    def output(self) -> str:
        """What a pipeline hands the next step: the registered version, else the logged model."""
        return f"models:/{self.registered_name}/{self.version}" if self.version else self.model_uri


def eval_params(config: DefendConfig) -> dict[str, dict[str, Any]]:
    """{method: {parameter: value}} of the suite's attacks that take step-level settings."""
    return {"uap_fast": {"max_steps": config.uap_max_steps}}


def check_request(config: DefendConfig) -> tuple[tuple[str, ...], keras.Model]:
    """Every check before any work: (defense names, parent network)."""
    names = parse_spec(config.defense)
    if not names:
        raise ConfigError("no defense given; name one or more of " + ", ".join(DEFENSES) + " joined by '+'")
    check_settings(names, config, also_read=("uap_max_steps",) if "uap_fast" in config.eval_attacks else ())
    for condition in suite(config.eval_attacks, config.eval_eps, params=eval_params(config)):
        condition.check()
    requests = []
    if "retrain" in names:
        requests += [(m, config.retrain_eps) for m in config.retrain_attacks]
        if config.on_the_fly and (len(config.retrain_attacks) != 1 or config.retrain_attacks[0] not in ON_THE_FLY_METHODS):
            raise ConfigError(f"on-the-fly retraining takes one attack, {' or '.join(ON_THE_FLY_METHODS)}; "
                              f"got {', '.join(config.retrain_attacks)}")
    if "detector" in names:
        requests += [(m, config.detector_eps) for m in config.detector_attacks]
    for method, eps in requests:
        attacks.check_attack(method, eps, "inf")
    parent = tracking.load_classifier(config.model_uri)
    if parent.chain or parent.detector is not None or parent.smoothing is not None:
        raise ModelError(f"{config.model_uri} is already a defended model; defend its undefended network instead "
                         f"({parent.info.get('parent_model_uri', 'the model it was made from')})")
    shape = parent.input_shape
    if len(shape) != 3 or shape[-1] != 3 or parent.n_classes != N_CLASSES:
        raise ModelError(f"{config.model_uri} is not a skin-lesion classifier: it takes {shape} and outputs "
                         f"{parent.n_classes} values, expected (H, W, 3) images and {N_CLASSES} classes")
    return names, parent.network


def copy_network(network: keras.Model) -> keras.Model:
    twin = keras.models.clone_model(network)
    twin.set_weights(network.get_weights())
    return twin


class TrackingHooks(Hooks):
    """Builders' per-epoch metrics (`<part>_<metric>` at step = epoch) and histories
    (training/<part>_history.json and _curves.png) into the active run."""

    def on_epoch(self, part: str, epoch: int, logs: Mapping[str, Any]) -> None:
        tracking.log_metrics({f"{part}_{k}": v for k, v in logs.items() if isinstance(v, (int, float))}, step=epoch)

    def on_history(self, part: str, history: dict[str, list[float]]) -> None:
        tracking.log_json(history, f"training/{part}_history.json")
        if history.get("loss"):
            fig = plots.training_curves_figure(history)
            tracking.log_figure(fig, f"training/{part}_curves.png")
            plots.close(fig)


def build_defense(names: Sequence[str], parent: keras.Model, data: Dataset, config: DefendConfig,
                  hooks: Hooks | None = None, retrained: keras.Model | None = None) -> DefendedClassifier:
    """The DefendedClassifier of spec `names` made from network `parent` (which stays as it
    is): a fold of the registry's builders over a copy of it, in DEFENSES' order. With
    `retrained` (retrained_network's), the fold starts from it and skips retrain."""
    info = {"spec": "+".join(names), "families": [DEFENSES[n].family for n in names],
            "parent_model_uri": config.model_uri}
    classifier = DefendedClassifier(copy_network(parent if retrained is None else retrained), info=info)
    hooks = hooks or Hooks()
    for name in names:
        if not (name == "retrain" and retrained is not None):
            classifier = DEFENSES[name].build(classifier, data, config, hooks)
    return classifier


def retrained_network(config: DefendConfig) -> keras.Model | None:
    """The network of config.retrained_uri, or None when none is given. It must be a `retrain`
    defense of config.model_uri (pinned) logged with this config's retrain and data settings and
    seed: retraining is deterministic by seed, so it is the network retraining would make.
    ConfigError naming retrained_uri and the setting that differs otherwise."""
    if not config.retrained_uri:
        return None
    where = f"retrained_uri {config.retrained_uri}"
    donor = tracking.load_classifier(config.retrained_uri)
    if donor.info.get("spec") != "retrain":
        raise ConfigError(f"{where} is not a retrain defense (its defense: {donor.info.get('spec') or 'none'})")
    made_from = tracking.pinned_uri(donor.info.get("parent_model_uri", ""))
    if made_from != config.model_uri:
        raise ConfigError(f"{where} was retrained from {made_from}, not from {config.model_uri}")
    logged = tracking.model_run_params(config.retrained_uri)
    wanted = {k: v for k, v in flatten(config).items()
              if k == "seed" or k.startswith("data.") or k in DEFENSES["retrain"].settings and k != "retrained_uri"}
    differ = sorted(k for k in wanted if not tracking.params_match(logged, {k: wanted[k]}))
    if differ:
        raise ConfigError(f"{where} was retrained with other settings: "
                          + ", ".join(f"{k} {logged.get(k, 'unset')} (here {wanted[k]})" for k in differ))
    return donor.network


def _log_evaluation(evaluation, x):
    """Metrics, confusion matrices and the white-box example grids of an Evaluation. Every
    condition's matrices as JSON; drawn only for each model's clean and per-image worst (ensemble)
    rows, the rows evaluate's report draws too: drawing took a third of a defend run's logging."""
    tracking.log_metrics(evaluation.metrics())
    for m in evaluation.measurements:
        log_confusion(m.confusion, m.health_confusion, evaluation.health_map, evaluation.name(m),
                      figures=m.threat == "clean" or m.attack == ENSEMBLE)
    clean = evaluation.get(DEFENDED).predictions
    for m in evaluation.measurements:
        if m.model == DEFENDED and m.threat == "whitebox" and m.examples is not None:  # not the ensemble row
            n = len(m.examples)
            fig = plots.examples_figure(x[:n], m.examples, evaluation.y_true[:n], clean[:n], m.predictions[:n], CLASSES,
                                        m.eps)
            tracking.log_figure(fig, f"examples/{m.attack}_whitebox.png")
            plots.close(fig)


def _headline(spec, run_id, values, config, name, version):
    """One line: the run, clean accuracy and FNR before -> after, each white-box accuracy, the registration."""
    parts = [f"defend {spec}: run {run_id}",
             f"accuracy {values['parent_clean_accuracy']:.3f} -> {values['clean_accuracy']:.3f}",
             f"FNR {values['parent_clean_fnr']:.3f} -> {values['clean_fnr']:.3f}"]
    parts += [f"{m} white-box accuracy {values[f'adv_{m}_whitebox_accuracy']:.3f}" for m in config.eval_attacks]
    if version:
        parts.append(f"registered {name} v{version}" + (f" @{config.alias}" if config.alias else ""))
    return "  ".join(parts)


def run_defend(config: DefendConfig) -> DefendResult:
    """Build the defense `config.defense` on the model at `config.model_uri`, measure it, log
    and register it; see DefendResult."""
    names, parent = check_request(config)
    config = replace(config, model_uri=tracking.pinned_uri(config.model_uri))  # the parent, even once @baseline moves
    spec = "+".join(names)
    config = replace(config, data=replace(config.data, image_size=int(parent.input_shape[1])))
    retrained = retrained_network(config)
    tags = {"medrobust.step": "defend", "medrobust.defense": spec, "medrobust.parent_model_uri": config.model_uri}
    with tracking.run(config.experiment, run_name=config.run_name or f"defend-{spec}", tags=tags) as run_id:
        tracking.log_params(flatten(config) | {"defense_parts": ",".join(names),
                                              "defense_families": ",".join(DEFENSES[n].family for n in names)})
        set_seed(config.seed)
        data = load_dataset(config.data)
        tracking.log_dataset(data, context="test")
        tracking.log_text(data.table.to_csv(index=False), "data/split.csv")  # what retraining saw (lineage.py)
        defended = build_defense(names, parent, data, config, TrackingHooks(), retrained=retrained)
        x, y = data.x["test"], data.y["test"]
        if config.max_images:
            keep = stratified_subset(y, config.max_images, seed=config.seed)
            x, y = x[keep], y[keep]
        evaluation = measure(defended, x, y, suite(config.eval_attacks, config.eval_eps, params=eval_params(config)),
                             surrogate=parent, health_map=config.data.health_map, seed=config.seed,
                             names=(DEFENDED, PARENT))
        _log_evaluation(evaluation, x)
        records = evaluation.records
        values, table = flat_metrics(records, DEFENDED), wide_table(records, DEFENDED)
        tracking.log_text(format_table(table), "report/before_after.txt")
        tracking.log_json(table, "report/before_after.json")
        tracking.log_text(records_csv(records), "report/records.csv")
        defended.info |= operating_point(defended, data, target_sensitivity=config.target_sensitivity,
                                         health_map=config.data.health_map)
        model_uri, logged_uri = tracking.log_classifier(defended)
        name = version = None
        if config.register:  # last, so a failure anywhere above registers nothing
            name = f"medrobust-{parent.name}"
            version_tags = {k: f"{values[k]:.4f}" for k in VERSION_TAGS if k in values}
            version_tags |= {"defense": spec, "parent_model_uri": config.model_uri, "data_fingerprint": data.fingerprint,
                             **{k: str(v) for k, v in defended.info.items() if k.startswith("operating_")},
                             "operating_point_run": run_id}
            version = tracking.register_model(logged_uri, name, tags=version_tags, alias=config.alias)
    log.info(_headline(spec, run_id, values, config, name, version))
    return DefendResult(run_id, model_uri, name, version, values, table, records)


def route(grid: Mapping[str, list[Any]], values: dict[str, Any]) -> dict[str, Any]:
    """A pipeline instance's settings (`values`; `grid`: the settings its step varies). Where
    the grid varies the defense, a setting given once (`rounds: 2`) goes to the instances whose
    defense reads it (retrain, not llt); with one defense, a setting it does not read stays an
    error, as on the command line."""
    names = parse_spec(values.get("defense", DefendConfig().defense))
    eval_attacks = values.get("eval_attacks", DefendConfig().eval_attacks)
    also = ("uap_max_steps",) if "uap_fast" in (eval_attacks.split(",") if isinstance(eval_attacks, str)
                                                else eval_attacks) else ()
    if "defense" in grid:
        values = applicable(names, values, also_read=also)
    check_settings(names, DefendConfig.from_dict(values), also_read=also)  # before any run, not hours in
    return values
