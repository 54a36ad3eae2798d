"""The recap across models: several evaluate runs' records side by side, as the thesis'
closing comparison (its Tables 4.x in one table, and Figures 5.1 and 5.2: each metric across
baseline, attacked, and each defence under the same attack). Pure: no MLflow.

    models = {"undefended": records, "retrain": records, "llt": records, "retrain+llt": records}
    comparison(models, metrics=("accuracy", "fnr"))   # one row per (model, condition)
    stages(models, ("fgsm", "whitebox", 2 / 255), metric="accuracy")
    # (["undefended clean", "undefended fgsm 2/255 (white-box)", "retrain fgsm ...", ...], values, lows, highs)

Each model's records are the evaluate step's: the measured model is "target" (report.rows).
"""

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .records import CERTIFIED, MEAN, Record, is_corruption
from .report import condition_label, format_eps, rows, with_interval

MEASURED = "target"  # the measured model's name in the evaluate step's records
UNDEFENDED = "undefended"
_NAN = float("nan")


def model_rows(records: Iterable[Record]) -> dict[tuple[str, str, float], dict[str, str | float]]:
    """{(attack, threat, eps): row} of the measured model's rows (report.rows), eps rounded to
    1e-9 so that the same budget read back from two CSV files is one key. Of the natural
    corruptions only the mean over them per severity, and no certificate: each is in its run's
    report."""
    return {(r["attack"], r["threat"], round(float(r["eps"]), 9)): r for r in rows(records, model=MEASURED)
            if r["threat"] != CERTIFIED and (not is_corruption(r) or r["attack"] == MEAN)}


def comparison(models: Mapping[str, Iterable[Record]], *, metrics: Sequence[str]) -> list[dict[str, str | float]]:
    """One dict per (model, condition), models in the order given, each model's conditions in
    its own order: {"model", "condition", "attack", "threat", "eps", <metric>, <metric>_ci_low,
    <metric>_ci_high} for each of `metrics` (NaN where the row lacks it)."""
    out = []
    for name, records in models.items():
        for (attack, threat, eps), row in model_rows(records).items():
            entry = {"model": name, "condition": condition_label(attack, threat, eps), "attack": attack,
                     "threat": threat, "eps": eps}
            for m in metrics:
                for key in (m, f"{m}_ci_low", f"{m}_ci_high"):
                    entry[key] = float(row.get(key, _NAN))
            out.append(entry)
    return out


def shared_conditions(models: Mapping[str, Iterable[Record]]) -> list[tuple[str, str, float]]:
    """The attacked (attack, threat, eps) conditions every defended model holds (natural
    corruptions aside: they are no attack), in the first
    model's order; the undefended model may hold the white-box row instead of a transfer one
    (without a parent, its transfer attacks are white-box). With one model: its own."""
    tables = {name: model_rows(records) for name, records in models.items()}
    defended = [t for name, t in tables.items() if name != UNDEFENDED] or list(tables.values())
    first = next(iter(defended), {})
    return [c for c in first if c[1] not in ("clean", "corruption", CERTIFIED) and all(c in t for t in defended)]


def _lookup(table, name, condition):
    attack, threat, eps = condition
    row = table.get(condition)
    if row is None and name == UNDEFENDED and threat == "transfer":
        row = table.get((attack, "whitebox", eps))
    return row


def stages(models: Mapping[str, Iterable[Record]], condition: tuple[str, str, float], *,
           metric: str) -> tuple[list[str], list[float], list[float], list[float]]:
    """The thesis' recap curve of one metric under one attack: the undefended model clean, then
    every model under `condition` ((attack, threat, eps)). Returns (labels, values, lows, highs),
    lists of equal length; NaN where a model lacks the row or its interval."""
    condition = (condition[0], condition[1], round(float(condition[2]), 9))
    labels, values, lows, highs = [], [], [], []

    def add(label: str, row: Mapping[str, str | float] | None) -> None:
        labels.append(label)
        values.append(float(row.get(metric, _NAN)) if row else _NAN)
        lows.append(float(row.get(f"{metric}_ci_low", _NAN)) if row else _NAN)
        highs.append(float(row.get(f"{metric}_ci_high", _NAN)) if row else _NAN)

    tables = {name: model_rows(records) for name, records in models.items()}
    if UNDEFENDED in tables:
        add(f"{UNDEFENDED} clean", tables[UNDEFENDED].get(("none", "clean", 0.0)))
    for name, table in tables.items():
        add(f"{name} {condition[0]} {format_eps(condition[2])}", _lookup(table, name, condition))
    return labels, values, lows, highs


def paired_to_parent(child: pd.DataFrame, parent: pd.DataFrame, malignant: np.ndarray, *, n_resamples: int = 1000,
                     seed: int = 0) -> list[Record] | None:
    """delta_<figure> records of a defended model against its parent, each measured by its own
    evaluate run under the same suite on the same images: child, parent are per-image frames
    (image_id, label, one column `attack@threat@eps` of counted predictions per clean and
    ensemble row). Each column both hold gives the child's figure minus the parent's with the
    paired bootstrap interval (intervals.paired_difference). None when the images differ."""
    from .intervals import paired_difference
    from .records import record

    if list(child["image_id"]) != list(parent["image_id"]) or list(child["label"]) != list(parent["label"]):
        return None
    out = []
    for column in child.columns[2:]:
        if column not in parent.columns:
            continue
        attack, threat, eps = column.split("@")
        delta = paired_difference(child["label"].to_numpy(), child[column].to_numpy(), parent[column].to_numpy(),
                                  malignant, n_resamples=n_resamples, seed=seed)
        out += [record(MEASURED, attack, threat, float(eps), k, v) for k, v in delta.items()]
    return out


def _cell(row, metric):
    """A comparison cell: 'value [low, high]' (report.with_interval), '-' without a value."""
    if math.isnan(row[metric]):
        return "-"
    return with_interval(row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"])


def comparison_text(table: Iterable[Mapping[str, str | float]], metrics: Sequence[str]) -> str:
    """The comparison as fixed-width text, one line per row: model, condition, then each metric
    as 'value [low, high]' (value alone without an interval)."""
    header = ["model", "condition", *metrics]
    lines = [header] + [[r["model"], r["condition"], *(_cell(r, m) for m in metrics)] for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)





def render_recap_html(*, title: str, summary: Mapping[str, str], table: Iterable[Mapping[str, str | float]],
                      metrics: Sequence[str], figures: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: summary ({label: text}), the comparison table (rows of
    comparison(), metrics with intervals) and figures ({caption: PNG bytes})."""
    import html

    from .report import STYLE, figure_html

    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{STYLE}</style>", "</head>", "<body>", f"<h1>{e(title)}</h1>", "<dl>"]
    parts += [f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>" for k, v in summary.items()]
    parts += ["</dl>", "<h2>Comparison</h2>", "<table>",
              "<tr>" + "".join(f"<th>{e(c)}</th>" for c in ("model", "condition", *metrics)) + "</tr>"]
    for r in table:
        cells = [f'<td class="name">{e(r["model"])}</td>', f'<td class="name">{e(r["condition"])}</td>']
        cells += [f"<td>{e(_cell(r, m))}</td>" for m in metrics]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts += ["</table>", "<p>Intervals are 95 % bootstrap intervals over each run's test images; two figures whose "
              "intervals overlap are not called different.</p>"]
    if figures:
        parts.append("<h2>Recap curves</h2>")
        parts += [figure_html(name, png) for name, png in figures.items()]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


__all__ = ["MEASURED", "UNDEFENDED", "comparison", "comparison_text", "model_rows", "render_recap_html",
           "shared_conditions", "stages"]
