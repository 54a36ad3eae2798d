"""The baseline job on a real HAM10000 subset: train, attack, defend, all nested under one run."""

import logging

import pytest

from medrobust import tracking
from medrobust.config import DataConfig, BaselineConfig
from medrobust.steps.baseline import format_table, run_baseline


def test_format_table_puts_each_condition_in_a_column():
    table = format_table({"clean": {"accuracy": 0.75, "fnr": 0.25},
                          "fgsm 2/255": {"accuracy": 0.5, "fnr": 0.5, "fooling_rate": 0.4}})
    lines = table.splitlines()
    assert lines[0].split() == ["clean", "fgsm", "2/255"]
    assert lines[2].split() == ["accuracy", "0.750", "0.500"]
    assert "false-negative rate" in table and "0.250" in table
    fooling = next(line for line in lines if "fooling rate" in line)
    assert fooling.split()[2:] == ["-", "0.400"]  # no fooling rate without an attack
    assert "macro recall" not in table  # rows no column has are left out


def test_baseline_nests_every_step_under_one_run(ham_dir, caplog):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=30)
    # adaptive + health: the standard suite's AutoAttack (5000 Square queries) is evaluate's to test
    config = BaselineConfig(data=data, epochs=2, batch_size=32, experiment="baseline", uap_max_steps=3, rounds=1,
                            epochs_per_round=1, evaluate_images=20, evaluate_suites=("adaptive", "health"))
    with caplog.at_level(logging.INFO, logger="medrobust"):
        out = run_baseline(config)
    columns = out.attacks
    assert list(columns) == ["clean", "fgsm 2/255", "uap_fast 2/255"]
    every = tracking.search_runs("baseline")
    assert all(r["status"] == "FINISHED" for r in every)
    runs = [r for r in every if r["step"] != "evaluate-row"]
    assert [r["name"] for r in runs] == ["baseline", "train-small_cnn", "attack-fgsm", "attack-uap_fast",
                                         "defend-retrain+llt", "evaluate-adaptive+health"]
    assert [r["step"] for r in runs] == ["baseline", "train", "attack", "attack", "defend", "evaluate"]
    assert runs[0]["run_id"] == out.run_id and runs[0]["parent"] is None
    assert all(r["parent"] == out.run_id for r in runs[1:])
    # The evaluate run measured the defended model, one nested run per row of its report.
    evaluation = out.evaluation
    assert runs[5]["run_id"] == evaluation.run_id
    assert tracking.get_run(evaluation.run_id)["tags"]["medrobust.model_uri"] == "models:/medrobust-small_cnn/2"
    rows = [r for r in every if r["step"] == "evaluate-row"]
    assert rows and all(r["parent"] == evaluation.run_id for r in rows)
    names = {r["name"] for r in rows}
    assert {"pgd 2/255 (white-box)", "apgd 2/255 (white-box)", "health 2/255 (white-box)",
            "ensemble 2/255 (per-image worst over the suite)"} <= names
    assert "worst accuracy" in caplog.text and "worst fnr" in caplog.text
    fgsm = tracking.get_run(runs[2]["run_id"])
    assert fgsm["metrics"]["adv_accuracy"] == pytest.approx(columns["fgsm 2/255"]["accuracy"])
    assert fgsm["metrics"]["clean_accuracy"] == pytest.approx(columns["clean"]["accuracy"])
    assert tracking.get_run(runs[3]["run_id"])["params"]["max_steps"] == "3"
    # The defend run re-attacks the parent the same way: the same white-box FGSM figures.
    table = out.defense.table
    assert table["parent fgsm"]["accuracy"] == pytest.approx(columns["fgsm 2/255"]["accuracy"])
    assert list(table) == ["parent clean", "defended clean", "parent fgsm", "fgsm transfer", "fgsm white-box",
                           "parent uap_fast", "uap_fast transfer", "uap_fast white-box", "parent ensemble",
                           "ensemble white-box"]
    printed = caplog.text
    assert "uap_fast 2/255" in printed and "fooling rate" in printed and "fgsm white-box" in printed
    assert [v["version"] for v in tracking.model_versions("medrobust-small_cnn")] == [1, 2]
    assert tracking.model_aliases("medrobust-small_cnn") == {"baseline": 1, "candidate": 2}
    # Each step that reads data records it as an MLflow input, with the data fingerprint as digest.
    fingerprint = tracking.get_run(runs[1]["run_id"])["params"]["data.fingerprint"]
    assert [(i["digest"], i["context"]) for i in tracking.run_inputs(runs[1]["run_id"])] == [(fingerprint[:32], "train")]
    assert [i["context"] for i in tracking.run_inputs(runs[2]["run_id"])] == ["test"]


def test_baseline_without_a_defense_stops_after_the_attacks(ham_dir):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    config = BaselineConfig(data=data, epochs=1, batch_size=32, experiment="baseline", attacks=("fgsm",), defense="none",
                        evaluate_suites=None)
    assert run_baseline(config).defense is None
    assert [r["name"] for r in tracking.search_runs("baseline")] == ["baseline", "train-small_cnn", "attack-fgsm"]


@pytest.mark.parametrize("change, message", [({"attacks": ("nope",)}, "unknown attack method 'nope'"),
                                             ({"defense": "retrain+nope"}, "unknown defense 'nope'")])
def test_baseline_refuses_a_bad_request_before_training(ham_dir, change, message):
    config = BaselineConfig(data=DataConfig(path=str(ham_dir)), experiment="baseline", **change)
    with pytest.raises(ValueError, match=message):
        run_baseline(config)
    assert tracking.search_runs("baseline") == []
