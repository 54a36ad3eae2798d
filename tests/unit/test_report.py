"""The evaluate step's report, on synthetic long-format records."""

import math
import re

import numpy as np
import pytest

from medrobust import plots
from medrobust.evaluation.records import record
from medrobust.evaluation.report import (format_eps, headline, headline_text, overlap_notes,
                                         render_html, rows, security_curves)

E = 1 / 255


def _condition(model, attack, threat, eps, **values):
    return [record(model, attack, threat, eps, metric, value) for metric, value in values.items()]


def _ci(name, value, low, high):
    return {name: value, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _records():
    """Model 'defended': clean, fgsm transfer 2/255, pgd white-box 2/255 and 8/255, fgsm
    white-box 2/255; model 'parent' (another model, much worse) to check the filter."""
    out = []
    out += _condition("defended", "none", "clean", 0.0, **_ci("accuracy", 0.73, 0.70, 0.75),
                      **_ci("macro_recall", 0.60, 0.55, 0.65), **_ci("fnr", 0.20, 0.15, 0.25),
                      npv=0.90, op_fnr=0.05, rejected_rate=0.0)
    out += _condition("defended", "fgsm", "transfer", 2 * E, **_ci("accuracy", 0.72, 0.69, 0.74),
                      **_ci("macro_recall", 0.58, 0.52, 0.63), **_ci("fnr", 0.22, 0.17, 0.27),
                      fooling_rate=0.05)
    out += _condition("defended", "pgd", "whitebox", 2 * E, **_ci("accuracy", 0.61, 0.58, 0.64),
                      **_ci("macro_recall", 0.50, 0.45, 0.55), **_ci("fnr", 0.35, 0.30, 0.40),
                      fooling_rate=0.20)
    out += _condition("defended", "pgd", "whitebox", 8 * E, **_ci("accuracy", 0.412, 0.385, 0.440),
                      **_ci("macro_recall", 0.35, 0.30, 0.40), **_ci("fnr", 0.60, 0.55, 0.66),
                      fooling_rate=0.50)
    out += _condition("defended", "fgsm", "whitebox", 2 * E, accuracy=0.65, macro_recall=0.52, fnr=0.30)
    out += _condition("parent", "none", "clean", 0.0, accuracy=0.10, macro_recall=0.05, fnr=0.99)
    out += _condition("parent", "pgd", "whitebox", 8 * E, accuracy=0.01, macro_recall=0.01, fnr=1.0)
    return out


def test_rows_one_per_condition_in_order():
    table = rows(_records(), model="defended")
    assert [(r["attack"], r["threat"]) for r in table] == [
        ("none", "clean"), ("fgsm", "transfer"), ("pgd", "whitebox"), ("pgd", "whitebox"), ("fgsm", "whitebox")]
    assert table[3]["eps"] == pytest.approx(8 * E)
    assert table[3]["accuracy"] == 0.412 and table[3]["accuracy_ci_low"] == 0.385
    assert "fooling_rate" not in table[0]


def test_headline_picks_worst_row_and_names_it():
    h = headline(_records(), model="defended")
    assert set(h) == {"accuracy", "macro_recall", "fnr", "op_fnr"}
    assert h["op_fnr"]["value"] == 0.05
    acc = h["accuracy"]
    assert acc["value"] == 0.412 and acc["attack"] == "pgd" and acc["threat"] == "whitebox"
    assert acc["eps"] == pytest.approx(8 * E)
    assert (acc["ci_low"], acc["ci_high"]) == (0.385, 0.440)
    fnr = h["fnr"]  # max is worst for fnr
    assert fnr["value"] == 0.60 and fnr["attack"] == "pgd"
    # the parent model's much worse figures are not this model's
    assert h["macro_recall"]["value"] == 0.35


def test_headline_worst_can_be_the_clean_row_and_intervals_may_be_absent():
    recs = (_condition("m", "none", "clean", 0.0, accuracy=0.50, fnr=0.10)
            + _condition("m", "fgsm", "whitebox", 2 * E, accuracy=0.70, fnr=0.40)
            + _condition("m", "pgd", "whitebox", 2 * E, accuracy=0.60, fnr=0.05))
    h = headline(recs, model="m")
    assert h["accuracy"]["attack"] == "none" and h["accuracy"]["threat"] == "clean"
    assert h["accuracy"]["value"] == 0.50
    assert math.isnan(h["accuracy"]["ci_low"]) and math.isnan(h["accuracy"]["ci_high"])
    assert h["fnr"]["attack"] == "fgsm"
    assert math.isnan(h["macro_recall"]["value"]) and h["macro_recall"]["attack"] is None
    assert "op_fnr" not in h  # no operating point: no line rather than "undefined"
    text = headline_text(h)
    assert text[0] == "worst accuracy 0.500 under no attack (clean)"
    assert text[1] == "worst macro_recall: undefined in every condition"


def test_headline_skips_nan_and_first_row_wins_ties():
    recs = (_condition("m", "none", "clean", 0.0, accuracy=0.8, fnr=float("nan"))
            + _condition("m", "fgsm", "whitebox", 2 * E, accuracy=float("nan"), fnr=0.3)
            + _condition("m", "pgd", "whitebox", 2 * E, accuracy=0.6, fnr=0.3)
            + _condition("m", "cw", "whitebox", 2 * E, accuracy=0.6, fnr=0.1))
    h = headline(recs, model="m", worst={"accuracy": min, "fnr": max})
    assert h["accuracy"]["value"] == 0.6 and h["accuracy"]["attack"] == "pgd"  # NaN skipped, first of the tie
    assert h["fnr"]["value"] == 0.3 and h["fnr"]["attack"] == "fgsm"  # the clean NaN is not the max


def test_headline_text_format():
    lines = headline_text(headline(_records(), model="defended"))
    assert lines[0] == "worst accuracy 0.412 [0.385, 0.440] under pgd 8/255 (white-box)"
    assert lines[2] == "worst fnr 0.600 [0.550, 0.660] under pgd 8/255 (white-box)"


def test_format_eps():
    assert format_eps(0.0) == "0"
    assert format_eps(8 / 255) == "8/255"
    assert format_eps(np.float32(2 / 255)) == "2/255"
    assert format_eps(0.01) == "0.0100"


def test_overlap_notes_call_different_only_without_overlap():
    notes = overlap_notes(_records(), model="defended")
    # fgsm white-box has no interval: skipped; clean is the reference, not a note
    assert len(notes) == 3
    transfer, pgd2, pgd8 = notes
    assert transfer.startswith("fgsm 2/255 (transfer) accuracy 0.720 [0.690, 0.740] vs clean 0.730 [0.700, 0.750]")
    assert transfer.endswith(": intervals overlap, not called different")
    assert pgd2 == "pgd 2/255 (white-box) accuracy 0.610 [0.580, 0.640] vs clean 0.730 [0.700, 0.750]: different"
    assert pgd8.endswith(": different")


def test_overlap_notes_touching_intervals_and_fnr():
    recs = (_condition("m", "none", "clean", 0.0, **_ci("fnr", 0.2, 0.1, 0.3))
            + _condition("m", "pgd", "whitebox", 2 * E, **_ci("fnr", 0.4, 0.3, 0.5))
            + _condition("m", "cw", "whitebox", 2 * E, **_ci("fnr", 0.45, 0.31, 0.6)))
    touching, apart = overlap_notes(recs, model="m", metric="fnr")
    assert touching.endswith("not called different")
    assert apart.endswith(": different")
    assert overlap_notes(recs, model="m", metric="accuracy") == []


def test_security_curves_start_at_clean():
    curves = security_curves(_records(), model="defended", metric="accuracy")
    assert set(curves) == {"pgd", "fgsm"}  # white-box only (the fgsm transfer row is not on it)
    eps, values = curves["pgd"]
    np.testing.assert_allclose(eps, [0.0, 2 * E, 8 * E])
    np.testing.assert_allclose(values, [0.73, 0.61, 0.412])
    eps, values = curves["fgsm"]
    np.testing.assert_allclose(eps, [0.0, 2 * E])
    np.testing.assert_allclose(values, [0.73, 0.65])


def test_security_curves_sorted_and_own_eps0_kept():
    recs = (_condition("m", "none", "clean", 0.0, accuracy=0.9)
            + _condition("m", "pgd", "whitebox", 8 * E, accuracy=0.3)
            + _condition("m", "pgd", "whitebox", 0.0, accuracy=0.88)
            + _condition("m", "pgd", "whitebox", 2 * E, accuracy=0.6))
    eps, values = security_curves(recs, model="m", metric="accuracy")["pgd"]
    np.testing.assert_allclose(eps, [0.0, 2 * E, 8 * E])
    np.testing.assert_allclose(values, [0.88, 0.6, 0.3])


@pytest.fixture(scope="module")
def png():
    curves = security_curves(_records(), model="defended", metric="accuracy")
    return plots.figure_png(plots.security_curve_figure(curves, "accuracy", "accuracy under white-box attack"))


def test_figures_are_png(png):
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    roc = plots.figure_png(plots.roc_figure([0, 0.2, 1], [0, 0.8, 1], 0.8, "ROC <clean>"))
    assert roc.startswith(b"\x89PNG")


def test_render_html_self_contained(png):
    recs = _records()
    recs += _condition("defended", "uap<x>", "whitebox", 4 * E, accuracy=0.7)  # a name to escape
    page = render_html(title="Robustness of defended & co",
                       summary={"data": "ham10000", "fingerprint": "abc123", "model URI": "models:/m@candidate",
                                "threshold": "0.31"},
                       records=recs, model="defended", figures={"security curve (accuracy)": png})
    assert page.lstrip().startswith("<!DOCTYPE html>")
    for r in rows(recs, model="defended"):
        assert r["attack"].replace("<", "&lt;").replace(">", "&gt;") in page
    assert "uap<x>" not in page and "uap&lt;x&gt;" in page
    assert "defended &amp; co" in page
    for line in headline_text(headline(recs, model="defended")):
        assert line in page
    assert '<img src="data:image/png;base64,' in page
    assert "security curve (accuracy)" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(link|script)\b", page)
    assert "models:/m@candidate" in page and "abc123" in page
    # the table: one row per condition plus the header, intervals shown, '-' where missing
    table = page[page.index("<table>"):page.index("</table>")]
    assert table.count("<tr>") == len(rows(recs, model="defended")) + 1
    assert "0.412 [0.385, 0.440]" in table
    assert "8/255" in table and "white-box" in table
    assert "<th>fooling_rate</th>" in table and "<th>op_fnr</th>" in table and "<th>op_npv</th>" not in table
    assert "<td>-</td>" in table
    # overlap notes
    assert "pgd 2/255 (white-box) accuracy 0.610 [0.580, 0.640] vs clean 0.730 [0.700, 0.750]: different" in page
    # the parent model's rows are not in this page
    assert "0.010" not in table
