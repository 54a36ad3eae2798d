"""Long-format records and the views made from them.

A record is one figure of one model in one condition:
    {"model": "defended", "attack": "fgsm", "threat": "whitebox", "eps": 0.0078, "metric": "fnr", "value": 0.41}
attack is "none" and threat "clean" (eps 0.0) for clean rows; threat is "transfer" (crafted
on a surrogate) or "whitebox" (crafted on the model itself) otherwise; attack "ensemble" is the
per-image worst case over every attack of the suite up to that eps (evaluation/worst.py). A
natural corruption's row has threat "corruption", the corruption as attack and its severity
(1 to 5) in the eps column (evaluation/corruptions.py); a smoothing certificate's has threat
"certified" and the L2 radius as eps (evaluation/certified.py). metric names carry no condition prefix
(accuracy, fnr, referred_fnr, rejected_rate, fooling_rate, ...).

The flat names MLflow logs and the table titles are the ones every step has logged since the
first release, so they are irregular on purpose: the measured (primary) model's clean figures
are `clean_*` and its attacked ones `adv_<attack>_<threat>_*`; another model's carry its name,
`parent_clean_*`, and `parent_<attack>_*` for its own white-box attack.
"""

import csv
import io
from collections.abc import Iterable, Mapping
from typing import TypedDict

FIELDS = ("model", "attack", "threat", "eps", "metric", "value")
CLEAN = "none"  # the attack of a clean row
ENSEMBLE = "ensemble"  # the attack of a suite's per-image worst case (evaluation/worst.py)
CORRUPTION = "corruption"  # the threat of a natural corruption's row; its eps is the severity
MEAN = "mean"  # the attack of the corruption row averaging every corruption at one severity
CERTIFIED = "certified"  # the threat of a smoothing certificate's row; its eps is the L2 radius
THREATS = ("clean", "transfer", "whitebox", CORRUPTION, CERTIFIED)
THREAT_TITLES = {"clean": "clean", "transfer": "transfer", "whitebox": "white-box", CORRUPTION: "corruption",
                 CERTIFIED: "certified"}


def is_corruption(row: Mapping[str, object]) -> bool:
    """Whether a record or report row is a natural corruption's (not an attack's)."""
    return row["threat"] == CORRUPTION


def measured_apart(row: Mapping[str, object]) -> bool:
    """Whether a record or report row is measured apart from the attack suite (a natural
    corruption, a certificate): never an attack's headline, ensemble or recap condition."""
    return row["threat"] in (CORRUPTION, CERTIFIED)


class Record(TypedDict):
    """One figure of one model in one condition (the module's docstring says what each holds)."""

    model: str
    attack: str
    threat: str
    eps: float  # the budget on the [0, 1] scale; a corruption's severity; a certificate's L2 radius
    metric: str
    value: float


def record(model: str, attack: str, threat: str, eps: float, metric: str, value: float) -> Record:
    return {"model": model, "attack": attack, "threat": threat, "eps": float(eps), "metric": metric,
            "value": float(value)}


def condition_name(model: str, attack: str, threat: str, primary: str = "defended") -> str:
    """The metric-name prefix (without its trailing '_') of a condition, e.g. 'clean',
    'adv_fgsm_transfer', 'parent_clean', 'parent_fgsm'; also names its confusion artifacts."""
    if threat == "clean":
        return "clean" if model == primary else f"{model}_clean"
    if model == primary:
        return f"adv_{attack}_{threat}"
    return f"{model}_{attack}" if threat == "whitebox" else f"{model}_{attack}_{threat}"


def column_title(model: str, attack: str, threat: str, primary: str = "defended") -> str:
    """The table title of a condition: 'parent clean', 'defended clean', 'parent fgsm',
    'fgsm transfer', 'fgsm white-box'."""
    if threat == "clean":
        return f"{model} clean"
    if model == primary:
        return f"{attack} {THREAT_TITLES[threat]}"
    return f"{model} {attack}" if threat == "whitebox" else f"{model} {attack} {THREAT_TITLES[threat]}"


def by_condition(records: Iterable[Record]) -> dict[tuple[str, str, str, float], dict[str, float]]:
    """{(model, attack, threat, eps): {metric: value}}, conditions and metrics in record order."""
    out = {}
    for r in records:
        out.setdefault((r["model"], r["attack"], r["threat"], r["eps"]), {})[r["metric"]] = r["value"]
    return out


def _named(records, name_of):
    out, eps_of = {}, {}
    for (model, attack, threat, eps), values in by_condition(records).items():
        name = name_of(model, attack, threat)
        if eps_of.setdefault(name, eps) != eps:
            raise ValueError(f"records hold {name} at eps {eps_of[name]:g} and {eps:g}; the names carry no eps, "
                             "so give the records of one eps")
        out.setdefault(name, {}).update(values)
    return out


def flat_metrics(records: Iterable[Record], primary: str = "defended") -> dict[str, float]:
    """The flat {`<condition>_<metric>`: value} dict MLflow logs (see condition_name).
    ValueError if two records' conditions differ only by eps (the names would collide)."""
    return {f"{name}_{metric}": value
            for name, values in _named(records, lambda *c: condition_name(*c, primary)).items()
            for metric, value in values.items()}


def wide_table(records: Iterable[Record], primary: str = "defended") -> dict[str, dict[str, float]]:
    """{column title: {metric: value}}, one column per condition in record order (see
    column_title); what steps.logbook.format_table prints."""
    return _named(records, lambda *c: column_title(*c, primary))


def records_csv(records: Iterable[Record]) -> str:
    """The records as CSV text with a header row (FIELDS); values at full precision."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in FIELDS} for r in records)
    return out.getvalue()


def read_records_csv(text: str) -> list[Record]:
    """Records from records_csv's text, eps and value as floats. ValueError, naming the
    columns found, for a header other than FIELDS."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise ValueError(f"expected the columns {', '.join(FIELDS)}, got {', '.join(reader.fieldnames or ())}")
    return [record(r["model"], r["attack"], r["threat"], float(r["eps"]), r["metric"], float(r["value"]))
            for r in reader]
