"""The `report` step: evaluate runs gathered side by side (the latest per model of an
experiment, or the runs named), as the thesis' recap: one comparison table of every model
under every condition, with intervals, and its Figures 5.1 and 5.2 (each metric across the
undefended model clean, attacked, and each defended model under the same attack). Logged as
a run of its own: CSV, text, one HTML page and the figures."""

import csv
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd

from .. import plots, tracking
from ..config import ReportConfig, flatten
from ..defenses import DEFENSES, parse_spec
from ..data import malignant_mask
from ..errors import ConfigError, ModelError
from ..evaluation.recap import (UNDEFENDED, comparison, comparison_text, paired_to_parent, render_recap_html,
                                shared_conditions, stages)
from ..evaluation.records import Record, read_records_csv
from ..evaluation.report import condition_label
from .evaluate import PER_IMAGE

log = logging.getLogger(__name__)

RECORDS = "report/records.csv"  # where the evaluate step logs its records


@dataclass
class ReportResult:
    run_id: str
    models: dict  # {model label: evaluate run id}, in recap order
    table: list  # evaluation.recap.comparison rows
    figures: list  # captions of the recap curves


def model_label(spec: str | None) -> str:
    """'undefended' for a plain model, else the defense spec ('retrain+llt')."""
    return UNDEFENDED if spec in (None, "", "none") else spec


def recap_order(label: str) -> tuple[int, tuple[int, ...]]:
    """Undefended first, then single defenses before combinations, each in DEFENSES' order
    (the thesis' baseline, retrain, llt, retrain+llt)."""
    base = label.split(" (")[0]  # "llt (evaluate-full)": two runs of one kind of model
    if base == UNDEFENDED:
        return (0, ())
    names = list(DEFENSES)
    parts = parse_spec(base)
    return (len(parts), tuple(names.index(p) for p in parts))


def evaluate_runs(config: ReportConfig) -> dict[str, str]:
    """{label: run id}: the runs named (each must be a finished evaluate run), or the latest
    finished evaluate run per model label of config.experiment. ConfigError when none is found."""
    if config.runs:
        chosen = {}
        for run_id in config.runs:
            run = tracking.get_run(run_id)
            if run["tags"].get("medrobust.step") != "evaluate":
                raise ConfigError(f"run {run_id} is a {run['tags'].get('medrobust.step', 'non-medrobust')} run, not "
                                  "an evaluate run")
            if run["status"] != "FINISHED":
                raise ConfigError(f"evaluate run {run_id} is {run['status']}, not FINISHED")
            label = model_label(run["tags"].get("medrobust.defense"))
            if label in chosen:  # two runs of one kind of model: tell them apart by run name
                label = f"{label} ({run['name']})"
            chosen[label] = run_id
        return chosen
    every = tracking.search_runs(config.experiment)
    step_of = {r["run_id"]: r["step"] for r in every}
    # A tuning trial's or a gate's evaluation is of a model or sample the user did not choose to compare.
    found = [r for r in every if r["step"] == "evaluate" and r["status"] == "FINISHED"
             and step_of.get(r["parent"]) not in ("tune-trial", "promote")]
    if not found:
        raise ConfigError(f"no finished evaluate run in experiment {config.experiment!r}; run medrobust evaluate first")
    chosen = {}
    for r in found:  # oldest first, so the latest per model wins
        chosen[model_label(tracking.get_run(r["run_id"])["tags"].get("medrobust.defense"))] = r["run_id"]
    return chosen


def _per_image(run_id):
    return pd.read_csv(io.StringIO(tracking.load_text_artifact(run_id, PER_IMAGE)))


def with_parent_deltas(models: Mapping[str, list[Record]], chosen: Mapping[str, str]) -> dict[str, list[Record]]:
    """models ({label: records}) where each defended model whose parent's evaluate run is among
    `chosen` carries, on its clean and ensemble rows, the paired difference to that run on the
    same images (evaluation.recap.paired_to_parent), in place of the in-run one: the parent
    under the same suite, not only under the attacks crafted on it. Runs on other images, or
    without per-image predictions (older runs), keep their records as they are, with a log line."""
    runs = {label: tracking.get_run(run_id) for label, run_id in chosen.items()}
    by_version = {r["tags"].get("medrobust.model_version"): label for label, r in runs.items()}
    out = dict(models)
    for label, run in runs.items():
        parent = by_version.get(run["tags"].get("medrobust.parent_model_uri"))
        if parent is None:
            continue
        try:
            child_frame, parent_frame = _per_image(chosen[label]), _per_image(chosen[parent])
        except ModelError:
            log.warning("report: %s or its parent %s has no %s; its paired differences stay the run's own",
                        label, parent, PER_IMAGE)
            continue
        params = run["params"]
        deltas = paired_to_parent(child_frame, parent_frame, malignant_mask(params.get("data.health_map", "clinical")),
                                  n_resamples=int(params.get("n_resamples", 1000)), seed=int(params.get("seed", 0)))
        if deltas is None:
            log.warning("report: %s and its parent %s were measured on other images: no paired difference", label,
                        parent)
            continue
        paired = {(r["attack"], r["threat"], round(float(r["eps"]), 9)) for r in deltas}
        kept = [r for r in models[label] if not (r["metric"].startswith("delta_") and
                                                 (r["attack"], r["threat"], round(float(r["eps"]), 9)) in paired)]
        out[label] = kept + deltas
    return out


def run_report(config: ReportConfig) -> ReportResult:
    """Gather the evaluate runs of config (see evaluate_runs), log the recap; see ReportResult."""
    chosen = evaluate_runs(config)
    chosen = dict(sorted(chosen.items(), key=lambda item: recap_order(item[0])))
    models = {}
    for label, run_id in chosen.items():
        try:
            models[label] = read_records_csv(tracking.load_text_artifact(run_id, RECORDS))
        except ValueError as e:
            raise ConfigError(f"evaluate run {run_id}: {RECORDS} is not a records file ({e})") from e
    models = with_parent_deltas(models, chosen)
    present = {r["metric"] for records in models.values() for r in records}
    if config.metrics == ReportConfig().metrics:  # the defaults: those no run holds (op_fnr, delta_*) drop out
        config = replace(config, metrics=tuple(m for m in config.metrics if m in present))
    missing = [m for m in config.metrics if m not in present]
    if missing:
        raise ConfigError(f"metrics {', '.join(missing)} are in none of the runs; they hold "
                          f"{', '.join(sorted(m for m in present if not m.endswith(('_ci_low', '_ci_high'))))}")
    table = comparison(models, metrics=config.metrics)
    tags = {"medrobust.step": "report", "medrobust.runs": ",".join(chosen.values())}
    with tracking.run(config.experiment, run_name=config.run_name or "report", tags=tags) as run_id:
        # MLflow's parameter names take no '+': the models and their runs go in one JSON file
        tracking.log_params(flatten(config) | {"n_models": len(chosen)})
        tracking.log_json(chosen, "report/runs.json")
        figures = {}
        for condition in shared_conditions(models):
            title = f"recap: {condition_label(*condition)}"
            series = {}
            for metric in config.metrics:
                labels, values, lows, highs = stages(models, condition, metric=metric)
                series[metric] = (values, lows, highs)
            figures[title] = plots.figure_png(plots.recap_figure(labels, series, title))
        text = comparison_text(table, config.metrics)
        columns = ["model", "condition", "attack", "threat", "eps"] + [
            k for m in config.metrics for k in (m, f"{m}_ci_low", f"{m}_ci_high")]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        tracking.log_text(out.getvalue(), "report/recap.csv")
        tracking.log_text(text + "\n", "report/recap.txt")
        for i, (caption, png) in enumerate(figures.items()):
            tracking.log_bytes(png, f"report/recap_{i + 1}.png")
        summary = {"experiment": config.experiment, **{label: f"evaluate run {rid}" for label, rid in chosen.items()}}
        tracking.log_text(render_recap_html(title=f"medrobust recap: {config.experiment}", summary=summary,
                                            table=table, metrics=config.metrics, figures=figures),
                          "report/recap.html")
    log.info("report: run %s, %d models, %d recap curves\n%s", run_id, len(models), len(figures), text)
    return ReportResult(run_id, chosen, table, list(figures))


__all__ = ["ReportResult", "run_report"]
