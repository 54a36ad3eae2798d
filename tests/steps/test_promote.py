"""The promote step: a gate on an evaluate suite moves @robust only on a pass, keeps @previous,
records its verdict on the version, reuses an evaluate run of the same settings, and refuses a
gate it cannot judge."""

import pytest

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, PromoteConfig, TrainConfig
from medrobust.errors import ConfigError, GateFailed
from medrobust.steps.defend import run_defend
from medrobust.steps.promote import judge, run_promote
from medrobust.steps.train import run_train

from stores import shared_network

# trained once per session for every module asking for these settings (stores.network_once)
trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))

NAME = "medrobust-small_cnn"
LENIENT = dict(min_robust_macro_recall=0.0, max_attacked_fnr=1.0, max_accuracy_loss=1.0)


def _defend(data, model):
    return run_defend(DefendConfig(model_uri=model.model_uri, data=data, defense="llt", eval_attacks=("fgsm",),
                                   max_images=8, experiment="test"))


def test_promotion_moves_aliases_only_on_a_pass(trained):
    data, model = trained
    first = _defend(data, model)
    gate = dict(data=data, suites=("adaptive",), max_images=16, apgd_steps=10, experiment="test")
    passed = run_promote(PromoteConfig(**gate, **LENIENT))
    assert passed.passed and passed.version == first.version == 2 and not passed.reused
    assert tracking.model_aliases(NAME) == {"baseline": 1, "candidate": 2, "robust": 2}
    tags = tracking.model_version_tags(f"models:/{NAME}/2")
    assert tags["gate_result"] == "passed" and tags["gate_run"] == passed.run_id
    assert {c["criterion"] for c in passed.criteria} == {"min_robust_macro_recall", "max_attacked_fnr"}  # no @robust yet

    second = _defend(data, model)
    assert second.version == 3
    robust = next(c for c in passed.criteria if c["criterion"] == "min_robust_macro_recall")["value"]
    with pytest.raises(GateFailed, match="min_robust_macro_recall .* < 0.99"):
        run_promote(PromoteConfig(**gate, **(LENIENT | {"min_robust_macro_recall": 0.99})))
    assert tracking.model_aliases(NAME) == {"baseline": 1, "candidate": 3, "robust": 2}  # nothing moved
    tags = tracking.model_version_tags(f"models:/{NAME}/3")
    assert tags["gate_result"] == "failed" and "min_robust_macro_recall" in tags["gate_reasons"]
    failed_run = tracking.get_run(tags["gate_run"])
    assert failed_run["status"] == "FINISHED" and failed_run["tags"]["medrobust.gate"] == "failed"

    # Now it passes: v3 is @robust, v2 @previous; v3's evaluation is the failed gate's, reused,
    # and v2's clean accuracy (the accuracy-loss criterion) comes from the first gate's run.
    promoted = run_promote(PromoteConfig(**gate, **LENIENT))
    assert promoted.passed and promoted.reused and promoted.evaluate_run_id == tags["gate_evaluate_run"]
    assert tracking.model_aliases(NAME) == {"baseline": 1, "candidate": 3, "robust": 3, "previous": 2}
    loss = next(c for c in promoted.criteria if c["criterion"] == "max_accuracy_loss")
    assert loss["where"] == "clean, against @robust" and -1 <= loss["value"] <= 1
    assert robust >= 0
    evaluate_runs = [r for r in tracking.search_runs("test") if r["step"] == "evaluate"]
    assert len(evaluate_runs) == 2  # one per version: every later gate reused them


def test_a_gate_it_cannot_judge_or_a_missing_version_is_refused(ham_dir):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=20)
    with pytest.raises(ConfigError, match="names no registered model version"):
        run_promote(PromoteConfig(data=data, experiment="test"))
    with pytest.raises(ConfigError, match="the gate checks nothing"):
        run_promote(PromoteConfig(data=data, experiment="test", min_robust_macro_recall=None, max_attacked_fnr=None,
                                  max_accuracy_loss=None))
    assert tracking.search_runs("test") == []
    model = run_train(TrainConfig(data=data, epochs=1, batch_size=32, experiment="test"))
    # A figure the suites do not produce (an evaluation without an ensemble row) cannot be judged.
    with pytest.raises(ConfigError, match="min_robust_macro_recall needs robust_macro_recall, which suites health"):
        judge(PromoteConfig(data=data, suites=("health",)), {"clean_accuracy": (0.5, "clean")}, None)
    assert tracking.model_aliases(NAME) == {"baseline": model.version}
