"""Label poisoning: exact counts, determinism, and the step on a real HAM10000 subset."""

import numpy as np
import pandas as pd
import pytest

from medrobust import tracking
from medrobust.config import DataConfig, PoisonConfig
from medrobust.steps.poison import poison_labels, run_poison


def test_poison_flips_exactly_the_asked_number_from_the_source():
    y = np.array([5] * 37 + [2] * 10 + [0] * 5)
    for fraction in (0.05, 0.1, 0.3, 0.6, 1.0):
        poisoned, flipped = poison_labels(y, 5, 2, fraction, seed=3)
        assert len(flipped) == round(fraction * 37)
        assert np.all(y[flipped] == 5) and np.all(poisoned[flipped] == 2)
        unchanged = np.setdiff1d(np.arange(len(y)), flipped)
        assert np.array_equal(poisoned[unchanged], y[unchanged])
    a = poison_labels(y, 5, 2, 0.3, seed=3)[1]
    assert np.array_equal(a, poison_labels(y, 5, 2, 0.3, seed=3)[1])
    assert not np.array_equal(a, poison_labels(y, 5, 2, 0.3, seed=4)[1])


def test_bad_poison_requests():
    with pytest.raises(ValueError, match="same class"):
        PoisonConfig(source="nv", target="nv")
    with pytest.raises(ValueError, match=r"poison_fractions must be in \(0, 1\] \(element 0.0\)"):
        PoisonConfig(poison_fractions=(0.0,))
    with pytest.raises(ValueError, match=r"poison_fractions must be in \(0, 1\] \(element 1.5\)"):
        PoisonConfig(poison_fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match="poison_fractions needs at least one value"):
        PoisonConfig(poison_fractions=())


def test_poison_sweep_on_real_ham10000(ham_dir, ham_metadata, tmp_path):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=40)
    config = PoisonConfig(data=data, epochs=1, batch_size=32, experiment="test", poison_fractions=(0.2, 0.6))
    result = run_poison(config)
    parent = tracking.get_run(result.run_id)
    assert parent["status"] == "FINISHED"
    assert "poison/sweep.png" in tracking.list_artifacts(result.run_id)
    sweep = tracking.load_json_artifact(result.run_id, "poison/sweep.json")
    assert sweep["fractions"] == [0.2, 0.6] and len(sweep["clean_fnr"]) == 2
    for fraction, child in result.runs.items():
        run = tracking.get_run(child.run_id)
        assert run["tags"]["mlflow.parentRunId"] == result.run_id
        n_source_train = int(run["params"]["poison.n_flipped"])
        flipped = tracking.download_artifact(child.run_id, "poison/flipped.csv", tmp_path / child.run_id)
        ids = open(flipped).read().split()[1:]
        assert len(ids) == n_source_train > 0
        assert set(ham_metadata.set_index("image_id").loc[ids, "dx"]) == {"nv"}
        split = pd.read_csv(tracking.download_artifact(child.run_id, "data/split.csv", tmp_path / child.run_id))
        n_nv_train = ((split.split == "train") & (split.dx == "nv")).sum()
        assert len(ids) == round(fraction * n_nv_train)
        assert run["metrics"]["clean_accuracy"] == pytest.approx(child.metrics["clean_accuracy"])
    assert int(tracking.get_run(result.runs[0.6].run_id)["params"]["poison.n_flipped"]) > \
        int(tracking.get_run(result.runs[0.2].run_id)["params"]["poison.n_flipped"])
    assert [v["version"] for v in tracking.model_versions("medrobust-small_cnn-poisoned")] == [1, 2]
