"""The `promote` step: a registry gate. A model version (default @candidate) is evaluated under
the gate's suites (or a finished evaluate run of that version with the same settings is
reused) and checked against each criterion: the worst macro recall under attack, the worst
FNR under attack at the operating point, and the clean accuracy lost against the current
@robust version. Pass: @robust moves to it and the version it replaces gets @previous. Fail:
no alias moves. Either way the version's tags record the gate, its numbers and the verdict.

MLflow's deprecated stages map to aliases: Staging = @candidate (set by defend), Production =
@robust (set here), Archived = @previous.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from .. import tracking
from ..config import EvaluateConfig, PromoteConfig, SuiteConfig, flatten
from ..errors import ConfigError, GateFailed
from ..evaluation.records import ENSEMBLE, Record, read_records_csv
from ..evaluation.report import condition_label, rows
from ..evaluation.shift import worst_corruption
from .evaluate import MODEL, run_evaluate

log = logging.getLogger(__name__)

# Settings of an evaluate run that must match for it to be reused (the run's name, experiment
# and the image size, which follows the model, aside).
# The version itself is matched by the run's medrobust.model_version tag (its model_uri may be an alias).
REUSE_IGNORES = ("experiment", "run_name", "model_uri", "data.image_size", "data.cache_dir")
# How long a promote waits for another promote of the same registered model (which holds the
# lock through its whole gate) before it gives up with a line naming that run.
LOCK_WAIT_S = 3600.0


@dataclass
class PromoteResult:
    run_id: str
    version: int
    passed: bool
    criteria: list  # [{"criterion", "value", "limit", "passed", "where"}]
    evaluate_run_id: str  # the evaluate run the gate read (made now or reused)
    reused: bool
    aliases: dict  # {alias: version} of the registered model afterwards


def check_request(config: PromoteConfig) -> tuple[str, int]:
    """(name, version) of the version to promote; ConfigError before any work for a URI that
    names no registered version or a gate that checks nothing."""
    if not any(v is not None for v in (config.min_robust_macro_recall, config.max_attacked_fnr,
                                       config.max_corrupted_fnr, config.max_accuracy_loss)):
        raise ConfigError("the gate checks nothing: give min_robust_macro_recall, max_attacked_fnr, max_corrupted_fnr "
                          "or max_accuracy_loss")
    if config.alias == config.previous_alias:
        raise ConfigError(f"alias and previous_alias are both {config.alias!r}")
    found = tracking.registered_version(config.model_uri)
    if found is None:
        raise ConfigError(f"{config.model_uri} names no registered model version (promote takes "
                          "models:/<name>@<alias> or models:/<name>/<version>; a defended model is registered by defend)")
    if not tracking.serves_contract(f"models:/{found[0]}/{found[1]}"):
        # @robust is what a service loads: a version that answers otherwise would break its clients
        raise ConfigError(f"{config.model_uri} (version {found[1]}) was logged before every version served one contract "
                          "(docs/serving.md); train or defend it again with this medrobust and promote that version",
                          ["model_uri"])
    return found


def evaluation_of(config: EvaluateConfig, experiment: str, reuse: bool) -> tuple[list[Record], str, bool]:
    """(records, evaluate run id, reused) of an EvaluateConfig: a finished evaluate run of the
    same version with the same settings if `reuse`, else a new one (nested in the active run)."""
    if reuse:
        wanted = {k: v for k, v in flatten(config).items() if k not in REUSE_IGNORES}
        for run in tracking.finished_runs(experiment, {"medrobust.step": "evaluate",
                                                       "medrobust.model_version": config.model_uri}):
            if tracking.params_match(run["params"], wanted):
                log.info("promote: reusing evaluate run %s of %s", run["run_id"], config.model_uri)
                return read_records_csv(tracking.load_text_artifact(run["run_id"], "report/records.csv")), \
                    run["run_id"], True
    result = run_evaluate(config)
    return result.records, result.run_id, False


def gate_figures(records: Sequence[Record], eps: float, severity: int = 3) -> dict[str, tuple[float, str]]:
    """{figure: (value, where)} the gate reads from one evaluate run's records: the clean
    accuracy, and from the ensemble row at the gate's budget `eps` (per image the worst over
    every attack of the suites up to it; evaluation/worst.py; a security curve's larger budgets
    are not the gate's) the macro recall and op_fnr (the share of cancers under the operating
    threshold); with natural corruptions measured, the worst op_fnr over them at `severity`."""
    table = rows(records, model=MODEL)
    clean = next(r for r in table if r["threat"] == "clean")
    ensemble = [r for r in table if r["attack"] == ENSEMBLE and math.isclose(r["eps"], eps, rel_tol=1e-6)]
    out = {"clean_accuracy": (clean["accuracy"], "clean")}
    recall = [(r["macro_recall"], r) for r in ensemble if not math.isnan(r.get("macro_recall", math.nan))]
    fnr = [(r["op_fnr"], r) for r in ensemble if not math.isnan(r.get("op_fnr", math.nan))]
    for figure, found, pick in (("robust_macro_recall", recall, min), ("attacked_fnr", fnr, max)):
        if found:
            value, row = pick(found, key=lambda pair: pair[0])
            out[figure] = (value, condition_label(row["attack"], row["threat"], row["eps"]))
    corrupted = worst_corruption(records, model=MODEL, metric="op_fnr", severity=severity)
    if corrupted is not None:
        out["corrupted_fnr"] = (corrupted["value"], condition_label(corrupted["corruption"], "corruption", severity))
    return out


def judge(config: PromoteConfig, figures: Mapping[str, tuple[float, str]],
          robust_accuracy: float | None) -> list[dict[str, Any]]:
    """The criteria as dicts {criterion, value, limit, passed, where}; ConfigError for a
    criterion the suite does not produce."""
    out = []
    for criterion, figure, limit, passes in (
            ("min_robust_macro_recall", "robust_macro_recall", config.min_robust_macro_recall, lambda v, l: v >= l),
            ("max_attacked_fnr", "attacked_fnr", config.max_attacked_fnr, lambda v, l: v <= l),
            ("max_corrupted_fnr", "corrupted_fnr", config.max_corrupted_fnr, lambda v, l: v <= l)):
        if limit is None:
            continue
        if figure not in figures:
            raise ConfigError(f"the gate's {criterion} needs {figure}, which suites {','.join(config.suites)} do not "
                              "produce (op_fnr needs an operating point: a validation split; corrupted_fnr the "
                              "corruptions suite at corruption_severity)", [criterion])
        value, where = figures[figure]
        out.append({"criterion": criterion, "value": value, "limit": limit, "passed": passes(value, limit),
                    "where": where})
    if config.max_accuracy_loss is not None and robust_accuracy is not None:
        loss = robust_accuracy - figures["clean_accuracy"][0]
        out.append({"criterion": "max_accuracy_loss", "value": loss, "limit": config.max_accuracy_loss,
                    "passed": loss <= config.max_accuracy_loss + 1e-12, "where": f"clean, against @{config.alias}"})
    return out


def describe(c: Mapping[str, Any]) -> str:
    """'max_attacked_fnr 0.612 > 0.5 (pgd 2/255 (white-box))' for a failed criterion."""
    sign = (">=" if c["passed"] else "<") if c["criterion"].startswith("min") else ("<=" if c["passed"] else ">")
    return f"{c['criterion']} {c['value']:.3f} {sign} {c['limit']:g} ({c['where']})"


def run_promote(config: PromoteConfig) -> PromoteResult:
    """Evaluate the version at config.model_uri, gate it, move the aliases on a pass; see
    PromoteResult. Raises GateFailed (exit status 1) after logging when the gate fails."""
    name, version = check_request(config)
    pinned = f"models:/{name}/{version}"
    # the gate's suites and their settings are SuiteConfig's, shared with evaluate: a pipeline's
    # evaluate run of this version with the same settings is reused
    evaluate = EvaluateConfig(**{f.name: getattr(config, f.name) for f in fields(SuiteConfig) if f.name != "run_name"}
                              | {"model_uri": pinned})
    tags = {"medrobust.step": "promote", "medrobust.model_version": pinned}
    with tracking.run(config.experiment, run_name=config.run_name or f"promote {name} v{version}", tags=tags) as run_id, \
            tracking.promotion_lock(name, owner=run_id, wait_s=LOCK_WAIT_S) as move:
        # Under the lock: a promote beside this one waits, so the version it compares against
        # and moves to @previous is the one @robust holds now, not when this command started.
        current = tracking.model_aliases(name).get(config.alias)
        tracking.log_params(flatten(config) | {"current_version": current or "none"})
        records, evaluate_run, reused = evaluation_of(evaluate, config.experiment, config.reuse)
        figures = gate_figures(records, config.eps, config.corruption_severity)
        robust_accuracy = None
        if config.max_accuracy_loss is not None and current is not None and current != version:
            robust_records, _, _ = evaluation_of(replace(evaluate, model_uri=f"models:/{name}/{current}"),
                                                 config.experiment, config.reuse)
            robust_accuracy = gate_figures(robust_records, config.eps)["clean_accuracy"][0]
        criteria = judge(config, figures, robust_accuracy)
        passed = bool(criteria) and all(c["passed"] for c in criteria)
        reasons = [describe(c) for c in criteria if not c["passed"]]
        if not criteria:  # only max_accuracy_loss was asked, and there is no @robust to compare with
            reasons = [f"no criterion could be checked: max_accuracy_loss needs a current @{config.alias}"]
        tracking.log_metrics({c["criterion"]: c["value"] for c in criteria})
        tracking.log_json({"criteria": criteria, "passed": passed, "evaluate_run": evaluate_run}, "gate.json")
        verdict = {"gate_result": "passed" if passed else "failed", "gate_run": run_id, "gate_suites": ",".join(config.suites),
                   "gate_evaluate_run": evaluate_run, "gate_reasons": "; ".join(reasons) or "none",
                   **{f"gate_{c['criterion']}": f"{c['value']:.4f} (limit {c['limit']:g})" for c in criteria}}
        tracking.tag_model_version(pinned, verdict)
        tracking.set_tags({"medrobust.gate": verdict["gate_result"]})
        if passed:
            move(version, config.alias, config.previous_alias)
    aliases = tracking.model_aliases(name)
    for c in criteria:
        log.info("promote: %s %s", "pass" if c["passed"] else "FAIL", describe(c))
    result = PromoteResult(run_id, version, passed, criteria, evaluate_run, reused, aliases)
    if not passed:
        raise GateFailed(f"{name} v{version} stays where it is ({', '.join(f'@{a}' for a, v in aliases.items() if v == version) or 'no alias'}); "
                         + "; ".join(reasons), result=result)
    log.info("promote: %s v%d is @%s%s (run %s)", name, version, config.alias,
             f", v{current} is @{config.previous_alias}" if current not in (None, version) else "", run_id)
    return result


def moving_inputs(config: PromoteConfig) -> dict[str, int | None]:
    """What a promote reads that its settings do not fix (a pipeline keys its runs on it): the
    version its gate compares against, @alias now. Once the gate has promoted its own version,
    a re-run is the same gate (and is reused), not a new one."""
    found = tracking.registered_version(config.model_uri)
    current = tracking.model_aliases(found[0]).get(config.alias) if found else None
    return {"current": None if found and current == found[1] else current}


__all__ = ["PromoteResult", "moving_inputs", "run_promote"]
