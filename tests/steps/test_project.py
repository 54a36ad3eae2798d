"""The project files agree with the step table, and the CLI is generated from the configs
(tests/system/test_entry_points.py runs main, attack, defend, promote and tune with `mlflow run`)."""

import re
import shlex
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from medrobust.cli import build_parser, leaves, option
from medrobust.config import (AttackConfig, BaselineConfig, DataConfig, DefendConfig, EvaluateConfig, PipelineConfig, PoisonConfig,
                              PredictConfig, PromoteConfig, ReportConfig, TrainConfig, TuneConfig)
from medrobust.errors import ConfigError
from medrobust.steps import STEPS
from medrobust.steps.attack import method_params

REPO = Path(__file__).resolve().parents[2]
MLPROJECT = yaml.safe_load((REPO / "MLproject").read_text())


def _pins(lines):
    return dict(re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)$", line.strip()).groups()
                for line in lines if "==" in line)


def test_environment_files_pin_the_same_versions():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    base = _pins(pyproject["project"]["dependencies"])
    python_env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    conda_pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert _pins(python_env["dependencies"]) == base
    assert _pins(conda_pip) == base
    assert python_env["python"] == "3.11" and "python=3.11" in conda["dependencies"]
    assert "tf-keras" not in " ".join(base)


def _substituted(command, params, values):
    return shlex.split(re.sub(r"\{(\w+)\}", lambda m: shlex.quote(str(values[m.group(1)])), command))


@pytest.mark.parametrize("name", sorted(MLPROJECT["entry_points"]))
def test_mlproject_entry_point_matches_the_step_table(name):
    """Each entry point is a tracked step; each parameter is one of its config's options, with
    the config's default; the command passes each parameter to that option, and with the
    defaults it builds exactly the default config."""
    step = STEPS["pipeline" if name == "main" else name]  # main: `mlflow run .` runs the quick pipeline
    assert step.tracked
    entry = MLPROJECT["entry_points"][name]
    params = entry["parameters"]
    options = {(f.name if f.metadata.get("positional") else option(f).removeprefix("--").replace("-", "_")): (dotted, f)
               for dotted, f in leaves(step.config)}
    assert set(params) <= set(options), set(params) - set(options)
    words = _substituted(entry["command"], params, {k: v["default"] for k, v in params.items()})
    assert words[:4] == ["python", "-m", "medrobust", step.name]
    expected = []  # every parameter, each once, in order; a positional one as its bare value
    for p, spec in params.items():
        f = options[p][1]
        expected += [spec["default"]] if f.metadata.get("positional") else [option(f), spec["default"]]
    assert words[4:] == expected
    args = vars(build_parser().parse_args(words[3:]))
    del args["command"], args["verbose"]
    assert step.config.from_dict(args) == step.config()


def test_every_tracked_step_has_an_entry_point():
    assert {n for n, s in STEPS.items() if s.tracked} | {"main"} == set(MLPROJECT["entry_points"])


def test_main_entry_and_make_run_are_the_quick_pipeline():
    entries = MLPROJECT["entry_points"]
    assert entries["main"] == entries["pipeline"]
    assert entries["main"]["parameters"]["file"]["default"] == "pipelines/quick.yaml"
    makefile = (REPO / "Makefile").read_text()
    assert "run: install\n\t$(PY) -m medrobust pipeline pipelines/quick.yaml\n" in makefile


CONFIGS = [TrainConfig(), PoisonConfig(poison_fractions=(0.05, 0.6)), AttackConfig(method="pgd", eps=8 / 255),
           DefendConfig(defense="distill", retrain_attacks=("fgsm", "pgd")), BaselineConfig(attacks=("fgsm",)),
           EvaluateConfig(suites=("thesis", "full"), split="all", threshold=0.3, curve_eps=(0.0, 4 / 255)),
           PredictConfig(inputs=("a.jpg", "b/")), ReportConfig(runs=("a", "b"), metrics=("fnr",)),
           TuneConfig(objective="defense", suites=("standard", "health"), storage="sqlite:///o.db", timeout=60.0),
           PromoteConfig(max_accuracy_loss=None, suites=("adaptive",), max_images=100),
           PipelineConfig(file="pipelines/thesis.yaml", overrides="resnet.weights=/w.h5", rerun=True)]


@pytest.mark.parametrize("config", CONFIGS + [replace(c, data=DataConfig(image_size=32, per_class_limit=9))
                                              for c in CONFIGS if hasattr(c, "data")], ids=repr)
def test_config_round_trips_through_a_dict(config):
    assert type(config).from_dict(config.to_dict()) == config
    assert type(config).from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config  # as a pipeline file


def test_none_means_no_value_from_python_as_from_the_cli():
    # A literal "none" alias once reached the registry as an alias named none.
    assert DefendConfig(alias="none").alias is None and DefendConfig.from_dict({"alias": "none"}).alias is None
    assert TrainConfig(alias="None").alias is None and TrainConfig(alias="robust").alias == "robust"
    assert TrainConfig(weights="none").weights == "none"  # a choice named none, not an absent value


def test_every_step_config_is_in_the_table():
    assert {s.config for s in STEPS.values()} == {type(c) for c in CONFIGS}


def test_from_dict_refuses_unknown_keys_and_bad_values_by_name():
    with pytest.raises(ConfigError, match="unknown setting epoch for TrainConfig; expected .*epochs"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="unknown setting sise for DataConfig"):
        TrainConfig.from_dict({"data": {"sise": 32}})
    with pytest.raises(ConfigError, match="epochs must be an integer, got 'three'"):
        TrainConfig.from_dict({"epochs": "three"})
    with pytest.raises(ConfigError, match="epochs must be at least 1, got 0"):
        TrainConfig.from_dict({"epochs": "0"})
    with pytest.raises(ConfigError, match=r"eps must be in \[0, 1\] \(images are on \[0, 1\]"):
        AttackConfig.from_dict({"eps": 8})
    with pytest.raises(ConfigError, match="class_weight must be one of balanced, sqrt, none, got 'square'"):
        TrainConfig.from_dict({"class_weight": "square"})
    typed = AttackConfig.from_dict({"eps": "8/255", "data.image_size": "32", "target": "none", "random_start": "no"})
    assert typed.eps == 8 / 255 and typed.data.image_size == 32 and typed.target is None and not typed.random_start


def test_an_attack_setting_the_method_does_not_take_is_refused_by_name():
    with pytest.raises(ConfigError, match="attack fgsm takes no steps; its own settings are none"):
        method_params(AttackConfig(method="fgsm", steps=20))
    with pytest.raises(ConfigError, match="attack pgd takes no uap_delta; its own settings are steps, restarts, step_size"):
        method_params(AttackConfig(method="pgd", uap_delta=0.5))
    assert method_params(AttackConfig(method="pgd", steps=20))["steps"] == 20


@pytest.mark.parametrize("name", sorted(STEPS))
def test_generated_help_lists_every_config_field(name):
    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command").choices[name]
    text = sub.format_help()
    for dotted, f in leaves(STEPS[name].config):
        shown = f.name.upper() if f.metadata.get("positional") else option(f)
        assert shown in text, dotted
        assert f.metadata["help"].split()[0] in text, dotted


def test_help_at_the_top_level_lists_every_step():
    """`medrobust --help` is the first command a user types (a '95 %' in a step's summary once
    crashed argparse's formatting)."""
    text = build_parser().format_help()
    assert all(name in text for name in STEPS)
