"""The evaluate step's report: one model's long-format records (see records.py) turned into
rows per condition, the worst figures (headline), interval comparisons against clean, security
curves and one self-contained HTML page. Pure: no MLflow, no TensorFlow.

    h = headline(records, model="defended")
    h["accuracy"]   # {"value": 0.41, "attack": "pgd", "threat": "whitebox", "eps": 0.0314, "ci_low": ..., "ci_high": ...}
    headline_text(h)   # ["worst accuracy 0.412 [0.385, 0.440] under pgd 8/255 (white-box)", ...]
    overlap_notes(records, model="defended")
    security_curves(records, model="defended", metric="accuracy")   # {"pgd": (eps, values)}
    page = render_html(title=..., summary={...}, records=records, model="defended", figures={name: png_bytes})

A condition is (attack, threat, eps); the intervals of figure m are the records named
`m_ci_low` and `m_ci_high` of the same condition (intervals.interval_summary's names).
"""

import base64
import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from .intervals import overlap
from .records import (CERTIFIED, CORRUPTION, ENSEMBLE, MEAN, THREAT_TITLES, Record, by_condition, is_corruption,
                      measured_apart)

# The headline figures and which end of each is the worst; op_fnr (the FNR at the clinical
# operating point) only where the report has an operating point.
WORST = {"accuracy": min, "macro_recall": min, "fnr": max, "op_fnr": max}

# Table columns: always shown (with intervals where recorded), then shown when any row has them.
TABLE_METRICS = ("accuracy", "macro_recall", "fnr", "npv", "sensitivity")
OPTIONAL_METRICS = ("op_sensitivity", "op_fnr", "op_specificity", "op_npv", "delta_accuracy", "delta_macro_recall",
                    "delta_fnr", "fooling_rate", "rejected_rate", "seconds")

_NAN = float("nan")


def _defined(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def format_eps(eps: float) -> str:
    """'0' for 0, 'n/255' when eps is a multiple of 1/255 (on the [0, 1] image scale), else 4 decimals."""
    eps = float(eps)
    if eps == 0:
        return "0"
    n = round(eps * 255)
    if n != 0 and math.isclose(eps, n / 255, rel_tol=1e-6, abs_tol=1e-12):
        return f"{n}/255"
    return f"{eps:.4f}"


def condition_label(attack: str, threat: str, eps: float) -> str:
    """'pgd 8/255 (white-box)', 'fgsm 2/255 (transfer)'; 'no attack (clean)' for a clean row."""
    if threat == "clean":
        return "no attack (clean)"
    if threat == CORRUPTION:
        return f"{'mean of the corruptions' if attack == MEAN else attack} at severity {eps:g} (corruption)"
    if threat == CERTIFIED:
        return f"certified at L2 radius {eps:g} (randomized smoothing)"
    if attack == ENSEMBLE:
        return f"ensemble {format_eps(eps)} (per-image worst over the suite)"
    return f"{attack} {format_eps(eps)} ({THREAT_TITLES.get(threat, threat)})"


def _interval(row, metric):
    """(low, high) of `metric` in a row, NaN for a missing bound."""
    return (row.get(f"{metric}_ci_low", _NAN), row.get(f"{metric}_ci_high", _NAN))


def _num(value, digits=3):
    return "nan" if not _defined(value) else f"{value:.{digits}f}"


def with_interval(value: float | None, low: float | None, high: float | None) -> str:
    """'0.712 [0.650, 0.770]'; the value alone when a bound is missing; 'nan' for no value."""
    text = _num(value)
    if _defined(low) and _defined(high):
        text += f" [{_num(low)}, {_num(high)}]"
    return text


def rows(records: Iterable[Record], *, model: str) -> list[dict[str, str | float]]:
    """One dict per condition of `model`, in first-seen order:
    {"attack", "threat", "eps", <metric>: value, ...} (interval bounds included as `m_ci_low`, `m_ci_high`)."""
    return [{"attack": attack, "threat": threat, "eps": eps, **values}
            for (m, attack, threat, eps), values in by_condition(records).items() if m == model]


def headline(records: Iterable[Record], *, model: str,
             worst: Mapping[str, Callable[[list[float]], float]] = WORST) -> dict[str, dict[str, str | float | None]]:
    """The worst value of each figure over the ensemble rows of `model` and its clean row (over
    every attacked row where there is no ensemble row; natural corruptions are no attack and
    have their own summary, corruptions.worst_corruption). An ensemble row is the per-image worst case over
    the suite (evaluation/worst.py), so it is at most every attack's row of its budget.

    worst: {metric: fn} with fn(list of values) -> the worst one (min for figures where low is
    bad, max for error rates). Returns {metric: {"value", "attack", "threat", "eps", "ci_low",
    "ci_high"}}: the row that reached the worst value (the first one on ties), its interval
    from `<metric>_ci_low/_ci_high` (NaN if absent). NaN values are skipped; a metric no row
    defines gets value NaN, attack and threat None and eps NaN, except an OPTIONAL_METRICS one
    that no row holds at all (op_fnr without an operating point), which is left out.
    """
    table = [r for r in rows(records, model=model) if not measured_apart(r)]
    if any(r["attack"] == ENSEMBLE for r in table):
        table = [r for r in table if r["attack"] == ENSEMBLE or r["threat"] == "clean"]
    out = {}
    for metric, pick in worst.items():
        if metric in OPTIONAL_METRICS and not any(metric in r for r in table):
            continue
        candidates = [r for r in table if _defined(r.get(metric))]
        if not candidates:
            out[metric] = {"value": _NAN, "attack": None, "threat": None, "eps": _NAN,
                           "ci_low": _NAN, "ci_high": _NAN}
            continue
        value = pick([r[metric] for r in candidates])
        row = next(r for r in candidates if r[metric] == value)
        low, high = _interval(row, metric)
        out[metric] = {"value": float(row[metric]), "attack": row["attack"], "threat": row["threat"],
                       "eps": float(row["eps"]), "ci_low": float(low), "ci_high": float(high)}
    return out


def headline_text(h: Mapping[str, Mapping[str, str | float | None]]) -> list[str]:
    """One line per metric of headline(), e.g.
    'worst accuracy 0.412 [0.385, 0.440] under pgd 8/255 (white-box)'."""
    lines = []
    for metric, w in h.items():
        if w["attack"] is None or not _defined(w["value"]):
            lines.append(f"worst {metric}: undefined in every condition")
            continue
        lines.append(f"worst {metric} {with_interval(w['value'], w['ci_low'], w['ci_high'])} "
                     f"under {condition_label(w['attack'], w['threat'], w['eps'])}")
    return lines


def _clean_row(table):
    return next((r for r in table if r["threat"] == "clean"), None)


def overlap_notes(records: Iterable[Record], *, model: str, metric: str = "accuracy") -> list[str]:
    """For each attacked row of `model` with an interval of `metric`, whether it overlaps the
    clean row's, e.g. 'pgd 2/255 (white-box) accuracy 0.610 [0.580, 0.640] vs clean 0.730
    [0.700, 0.750]: different' or '...: intervals overlap, not called different'. Rows without
    an interval (bounds missing or NaN) are skipped; no notes without a clean interval."""
    table = rows(records, model=model)
    clean = _clean_row(table)
    if clean is None:
        return []
    clean_ci = _interval(clean, metric)
    if not all(_defined(v) for v in clean_ci):
        return []
    notes = []
    for r in table:
        if r["threat"] == "clean" or measured_apart(r):
            continue
        ci = _interval(r, metric)
        if not all(_defined(v) for v in ci):
            continue
        verdict = "intervals overlap, not called different" if overlap(ci, clean_ci) else "different"
        notes.append(f"{condition_label(r['attack'], r['threat'], r['eps'])} {metric} "
                     f"{with_interval(r.get(metric, _NAN), *ci)} vs clean "
                     f"{with_interval(clean.get(metric, _NAN), *clean_ci)}: {verdict}")
    return notes


def security_curves(records: Iterable[Record], *, model: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{attack: (eps, values)} over the white-box rows of `model` that hold `metric`, eps
    ascending (float64 arrays, eps on the [0, 1] image scale); the clean row's value is added
    at eps 0 to every attack without its own eps-0 row."""
    table = rows(records, model=model)
    clean = _clean_row(table)
    points = {}
    for r in table:
        if r["threat"] == "whitebox" and metric in r:
            points.setdefault(r["attack"], []).append((float(r["eps"]), float(r[metric])))
    out = {}
    for attack, pts in points.items():
        if clean is not None and metric in clean and not any(e == 0 for e, _ in pts):
            pts = [(0.0, float(clean[metric]))] + pts
        pts.sort(key=lambda p: p[0])
        out[attack] = (np.array([e for e, _ in pts], dtype=np.float64),
                       np.array([v for _, v in pts], dtype=np.float64))
    return out


def _cell(row, metric):
    if metric not in row:
        return "-"
    return with_interval(row[metric], *_interval(row, metric))


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
dd { margin: 0; font-family: monospace; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td.name { text-align: left; }
figure { display: inline-block; margin: 1em; }
figcaption { text-align: center; }
"""


CORRUPTION_COLUMNS = ("accuracy", "macro_recall", "fnr", "op_fnr", "op_specificity", "change_accuracy", "change_fnr",
                      "change_op_fnr")


def corruption_section(corrupted: Sequence[Mapping[str, str | float]]) -> list[str]:
    """HTML lines of the natural corruptions' table: one row per corruption and severity (the
    mean of the corruptions last at each severity), figures with intervals and their paired
    change from clean."""
    e = html.escape
    columns = [m for m in CORRUPTION_COLUMNS if any(m in r for r in corrupted)]
    ordered = sorted(corrupted, key=lambda r: (r["eps"], r["attack"] == MEAN))
    parts = ["<h2>Natural corruptions</h2>",
             "<p>The model on the same images under each corruption (ImageNet-C's manner, severity 1 to 5), counted "
             "as measured: a shift is no adversary. change_* is the corrupted figure minus the clean one on the same "
             "images with a paired bootstrap interval; op_* is the health call at the model's fixed operating "
             "threshold. The heat map is among the figures.</p>", "<table>",
             "<tr>" + "".join(f"<th>{e(c)}</th>" for c in ("corruption", "severity", *columns)) + "</tr>"]
    for r in ordered:
        cells = [f'<td class="name">{e(str(r["attack"]))}</td>', f"<td>{r['eps']:g}</td>"]
        parts.append("<tr>" + "".join(cells + [f"<td>{e(_cell(r, m))}</td>" for m in columns]) + "</tr>")
    return parts + ["</table>"]


CERTIFIED_COLUMNS = ("certified_accuracy", "certified_fnr", "abstain_rate", "empirical_accuracy", "disagreements",
                     "violations")


def certified_section(certified: Sequence[Mapping[str, str | float]]) -> list[str]:
    """HTML lines of the certificates' table: per L2 radius the certified accuracy and FNR with
    intervals, the abstention rate and the L2 PGD check; the certification settings above it."""
    e = html.escape
    first = certified[0]
    parts = ["<h2>Certified robustness (randomized smoothing)</h2>",
             f"<p>Cohen et al.'s CERTIFY (ART): noise sigma {first.get('certify_sigma', _NAN):g}, "
             f"{first.get('certify_n0', _NAN):g} samples to choose the class and {first.get('certify_n', _NAN):g} to "
             f"bound it, alpha {first.get('certify_alpha', _NAN):g}, {first.get('certify_images', _NAN):g} images, "
             f"{first.get('certify_seconds_per_image', _NAN):.2f} s per image. Radii are L2 on the [0, 1] pixel "
             "scale. certified_fnr counts a cancer not certified malignant at the radius (benign, abstained or "
             "certified only below it) as missed. empirical_accuracy: the smoothed classifier's vote under an L2 PGD "
             "attack of that budget (at least the certified figure, up to sampling); disagreements: images certified "
             "there whose vote under attack left their class; violations: those a fresh vote of n samples confirms "
             "(0 where the certificate holds).</p>", "<table>",
             "<tr>" + "".join(f"<th>{e(c)}</th>" for c in ("L2 radius", *CERTIFIED_COLUMNS)) + "</tr>"]
    for r in sorted(certified, key=lambda r: r["eps"]):
        parts.append("<tr>" + f"<td>{r['eps']:g}</td>" + "".join(f"<td>{e(_cell(r, m))}</td>" for m in CERTIFIED_COLUMNS)
                     + "</tr>")
    return parts + ["</table>"]


def figure_html(name: str, png: bytes) -> str:
    """A <figure> holding PNG bytes inline (base64) with `name` as its caption."""
    data = base64.b64encode(bytes(png)).decode("ascii")
    name = html.escape(str(name))
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def render_html(*, title: str, summary: Mapping[str, str], records: Sequence[Record], model: str,
                figures: Mapping[str, bytes]) -> str:
    """One self-contained HTML page (inline CSS, figures inline as base64 PNG, no links).

    summary: {label: text} shown as a definition list (data, fingerprint, class counts, model
    URI, threshold ...); figures: {name: PNG bytes} shown with their name as caption. Sections:
    summary, headline (headline_text), one table row per condition of `model` (attack, eps,
    threat, TABLE_METRICS with intervals, OPTIONAL_METRICS that some row holds, '-' where
    missing), overlap notes on accuracy and fnr, figures. All text is HTML-escaped.
    """
    e = html.escape
    table = [r for r in rows(records, model=model) if not measured_apart(r)]
    corrupted = [r for r in rows(records, model=model) if is_corruption(r)]
    certified = [r for r in rows(records, model=model) if r["threat"] == CERTIFIED]
    columns = list(TABLE_METRICS) + [m for m in OPTIONAL_METRICS if any(m in r for r in table)]
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{e(str(title))}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{e(str(title))}</h1>", f"<p>model: <code>{e(str(model))}</code></p>"]

    parts.append("<h2>Summary</h2>")
    parts.append("<dl>")
    for key, value in summary.items():
        parts.append(f"<dt>{e(str(key))}</dt><dd>{e(str(value))}</dd>")
    parts.append("</dl>")

    parts.append("<h2>Headline (the worst ensemble row: per image, the worst over every attack)</h2>")
    parts.append("<ul>")
    parts.extend(f"<li>{e(line)}</li>" for line in headline_text(headline(records, model=model)))
    parts.append("</ul>")

    parts.append("<h2>Conditions</h2>")
    parts.append("<table>")
    parts.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in ("attack", "eps", "threat", *columns)) + "</tr>")
    for r in table:
        cells = [f'<td class="name">{e(str(r["attack"]))}</td>', f"<td>{e(format_eps(r['eps']))}</td>",
                 f'<td class="name">{e(THREAT_TITLES.get(r["threat"], str(r["threat"])))}</td>']
        cells += [f"<td>{e(_cell(r, m))}</td>" for m in columns]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append("<p>Intervals are 95 % bootstrap intervals. Attacks use the true labels; every attacked row "
                 "counts, per image, the worst of the clean image and the attack at this budget and below, and the "
                 "ensemble row the worst over every attack of the suite (an image is robust only if it is right "
                 "clean and under every attack). delta_* is this model minus its undefended parent on the same "
                 "images, with a paired bootstrap interval: an interval that excludes 0 is a difference.</p>")

    notes = [n for metric in ("accuracy", "fnr", "op_fnr") for n in overlap_notes(records, model=model, metric=metric)]
    parts.append("<h2>Attacked against clean</h2>")
    if notes:
        parts.append("<ul>")
        parts.extend(f"<li>{e(n)}</li>" for n in notes)
        parts.append("</ul>")
    else:
        parts.append("<p>No intervals recorded to compare.</p>")

    if corrupted:
        parts += corruption_section(corrupted)
    if certified:
        parts += certified_section(certified)

    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(figure_html(name, png) for name, png in figures.items())
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
