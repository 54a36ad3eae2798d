"""The recap across evaluate runs: pure functions on synthetic records, then the report step on
evaluate runs of a model trained on a real HAM10000 subset and of its llt-defended twin."""

import math

import pytest

from medrobust import tracking
from medrobust.config import DefendConfig, EvaluateConfig, ReportConfig
from medrobust.errors import ConfigError
from medrobust.evaluation import record, records_csv
from medrobust.evaluation.recap import comparison, comparison_text, shared_conditions, stages
from medrobust.evaluation.records import read_records_csv
from medrobust.steps.defend import run_defend
from medrobust.steps.evaluate import run_evaluate
from medrobust.steps.report import recap_order, run_report

from stores import shared_network

# trained once per session for every module asking for these settings (stores.network_once)
trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))

E = 2 / 255


def _records(clean, attacked, threat="whitebox", ci=True):
    out = [record("target", "none", "clean", 0.0, "accuracy", clean)]
    out += [record("target", "fgsm", threat, E, "accuracy", attacked), record("surrogate", "fgsm", "whitebox", E,
                                                                               "accuracy", 0.0)]
    if ci:
        out += [record("target", "fgsm", threat, E, "accuracy_ci_low", attacked - 0.05),
                record("target", "fgsm", threat, E, "accuracy_ci_high", attacked + 0.05)]
    return out


def test_records_survive_their_csv():
    records = _records(0.7, 0.4)
    assert read_records_csv(records_csv(records)) == records
    with pytest.raises(ValueError, match="expected the columns"):
        read_records_csv("a,b\n1,2\n")


def test_stages_are_the_thesis_recap_curve():
    # The undefended model has no parent: its transfer row is its white-box one.
    models = {"undefended": _records(0.7, 0.3, "whitebox"), "retrain": _records(0.68, 0.5, "transfer"),
              "retrain+llt": _records(0.66, 0.6, "transfer", ci=False)}
    labels, values, lows, highs = stages(models, ("fgsm", "transfer", E), metric="accuracy")
    assert labels == ["undefended clean", "undefended fgsm 2/255", "retrain fgsm 2/255", "retrain+llt fgsm 2/255"]
    assert values == [0.7, 0.3, 0.5, 0.6]
    assert lows[1:3] == pytest.approx([0.25, 0.45]) and math.isnan(lows[3]) and math.isnan(highs[0])
    assert shared_conditions(models) == [("fgsm", "transfer", round(E, 9))]


def test_comparison_keeps_every_row_of_the_measured_model_only():
    models = {"undefended": _records(0.7, 0.3), "llt": _records(0.69, 0.35)}
    table = comparison(models, metrics=("accuracy", "fnr"))
    assert [(r["model"], r["condition"]) for r in table] == [
        ("undefended", "no attack (clean)"), ("undefended", "fgsm 2/255 (white-box)"),
        ("llt", "no attack (clean)"), ("llt", "fgsm 2/255 (white-box)")]
    assert math.isnan(table[0]["fnr"]) and table[1]["accuracy_ci_low"] == pytest.approx(0.25)
    text = comparison_text(table, ("accuracy", "fnr")).splitlines()
    assert text[2].split() == ["undefended", "fgsm", "2/255", "(white-box)", "0.300", "[0.250,", "0.350]", "-"]


def test_recap_order_is_the_thesis_order():
    labels = ["retrain+llt", "llt", "undefended", "retrain"]
    assert sorted(labels, key=recap_order) == ["undefended", "retrain", "llt", "retrain+llt"]


def test_report_step_recaps_evaluate_runs_of_real_models(trained, tmp_path):
    data, model = trained
    # A spec with '+': MLflow refuses such a parameter name, so the recap must not make one.
    defended = run_defend(DefendConfig(model_uri=model.model_uri, data=data, defense="squeeze+llt",
                                       eval_attacks=("fgsm",), max_images=8, experiment="test", register=False))
    quick = dict(data=data, suites=("adaptive",), n_resamples=20, pgd_steps=1, apgd_steps=1, max_images=12,
                 experiment="test")
    plain = run_evaluate(EvaluateConfig(model_uri=model.model_uri, **quick))
    run_evaluate(EvaluateConfig(model_uri=defended.model_uri, **quick))  # superseded by the next one
    llt = run_evaluate(EvaluateConfig(model_uri=defended.model_uri, **quick))
    result = run_report(ReportConfig(experiment="test"))
    assert result.models == {"undefended": plain.run_id, "squeeze+llt": llt.run_id}  # the latest run per model
    assert {r["model"] for r in result.table} == {"undefended", "squeeze+llt"}
    clean = next(r for r in result.table if r["model"] == "squeeze+llt" and r["condition"] == "no attack (clean)")
    assert clean["accuracy"] == next(x["value"] for x in llt.records if x["model"] == "target" and
                                     x["threat"] == "clean" and x["metric"] == "accuracy")
    # One recap curve per attacked condition: the adaptive suite's fgsm, pgd and apgd (white-box), the ensemble.
    assert result.figures == [f"recap: {a} 2/255 (white-box)" for a in ("fgsm", "pgd", "apgd")] + [
        "recap: ensemble 2/255 (per-image worst over the suite)"]
    # the paired difference to the parent's own evaluate run on the same images, clean and under the
    # suite (the ensemble): the defended model's figure minus the parent's, with a paired interval
    def row(model, condition):
        return next(r for r in result.table if r["model"] == model and r["condition"] == condition)

    ensemble = "ensemble 2/255 (per-image worst over the suite)"
    for condition in ("no attack (clean)", ensemble):
        ours, parents = row("squeeze+llt", condition), row("undefended", condition)
        assert ours["delta_accuracy"] == pytest.approx(ours["accuracy"] - parents["accuracy"])
        assert ours["delta_fnr"] == pytest.approx(ours["fnr"] - parents["fnr"]), (condition, ours, parents)
        assert ours["delta_accuracy_ci_low"] <= ours["delta_accuracy"] <= ours["delta_accuracy_ci_high"]
    assert "report/per_image.csv" in tracking.list_artifacts(plain.run_id)
    run = tracking.get_run(result.run_id)
    assert run["tags"]["medrobust.step"] == "report" and run["params"]["n_models"] == "2"
    assert tracking.load_json_artifact(result.run_id, "report/runs.json") == {"undefended": plain.run_id,
                                                                              "squeeze+llt": llt.run_id}
    artifacts = set(tracking.list_artifacts(result.run_id))
    assert {"report/recap.csv", "report/recap.txt", "report/recap.html", "report/recap_4.png"} <= artifacts
    page = open(tracking.download_artifact(result.run_id, "report/recap.html", tmp_path)).read()
    assert "undefended" in page and "squeeze+llt" in page and page.count("data:image/png;base64,") == 4

    with pytest.raises(ConfigError, match=f"run {model.run_id} is a train run, not an evaluate run"):
        run_report(ReportConfig(experiment="test", runs=(model.run_id,)))
    with pytest.raises(ConfigError, match="metrics nope are in none of the runs"):
        run_report(ReportConfig(experiment="test", metrics=("accuracy", "nope")))
    with pytest.raises(ConfigError, match="no run 'missing'"):
        run_report(ReportConfig(experiment="test", runs=("missing",)))
    with pytest.raises(ConfigError, match="no finished evaluate run in experiment 'other'"):
        run_report(ReportConfig(experiment="other"))
