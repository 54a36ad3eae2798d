"""The pipeline step: parsing with file:line errors, grid expansion by lineage, reuse by key,
and a changed setting re-running exactly what lies downstream of it."""

from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from medrobust import tracking
from medrobust.config import PipelineConfig, SuiteConfig
from medrobust.errors import ConfigError
from medrobust.cli import build_parser
from medrobust.steps.pipeline import expand, parse, run_pipeline, split_overrides

from small_pipeline import write_pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("body, line, message", [
    ("""\
     train:
       step: trian
     """, 7, "step 'train': unknown step 'trian'; expected one of train, poison"),
    ("""\
     train:
       step: train
       with: {epochz: 1}
     """, 8, "step 'train': train has no setting 'epochz'"),
    ("""\
     attack:
       step: attack
       with: {model_uri: "${train}"}
     train:
       step: train
     """, 8, "refers to ${train}, which comes later (steps run in file order; a reference back is a cycle)"),
    ("""\
     attack:
       step: attack
       with: {model_uri: "${trained}"}
     """, 8, "refers to ${trained}, which is no step of this pipeline"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       grid: {method: [fgsm]}
     """, 8, "step 'attack': attack in a pipeline needs `model_uri`"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with:
         model_uri: "${train}"
         eps: 2
     """, 12, "step 'attack': eps must be in [0, 1]"),
    ("""\
     train:
       step: train
       with: {epochs: 1}
       with: {epochs: 2}
     """, 9, "key 'with' given twice"),
    ("""\
     train:
       step: train
       with: {epochs: [1
     """, 9, "not valid YAML"),
    ("""\
     attack:
       step: attack
       with: {model_uri: "prefix-${attack}"}
     """, 8, "a reference is a whole value"),
    ("""\
     train:
       step: train
     report:
       step: report
       with: {runs: "${train}"}
     """, 10, "runs takes the output of evaluate; ${train} is a train step"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${train}", seed: "${train}"}
     """, 10, "seed cannot take a reference"),
    ("""\
     sweep:
       step: poison
       with: {poison_fractions: [0.1, 0.3]}
     attack:
       step: attack
       with: {model_uri: "${sweep}"}
     """, 11, "${sweep} is a poison sweep, not one model"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${train}", eps: [1, 2]}
     """, 10, "eps takes one value, got the list [1, 2] (a grid varies it)"),
    ("""\
     train:
       step: train
       with: {epochs: 2}
       grid: {epochs: [1, 2]}
     """, 9, "epochs is given in `with` and in `grid`"),
    ("""\
     train:
       step: train
       with: {data.image_size: 4}
     """, 8, "step 'train': image_size must be at least 8"),
    ("""\
     train:
       step: train
       with: {arch: smal_cnn}
     """, 8, "arch must be one of small_cnn"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${train}"}
       grid: {method: [fgsm, pgdd]}
     """, 11, "unknown attack method 'pgdd'"),
    ("""\
     train:
       step: train
       with: {model_uri: "${train}"}
     """, 8, "train has no setting 'model_uri'"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${attack}"}
     """, 10, "refers to ${attack}, itself"),
    ("""\
     train:
       step: train
     defend:
       step: defend
       with: {model_uri: "${train}", defense: llt, rounds: 2}
     """, 10, "rounds is a setting of retrain, which the defense 'llt' does not include"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${train}", method: fgsm, max_steps: 60}
     """, 10, "attack fgsm takes no max_steps; its own settings are none"),
    ("""\
     train:
       step: train
     attack:
       step: attack
       with: {model_uri: "${train}", max_steps: 60}
       grid: {method: [fgsm, pgd]}
     """, 10, "max_steps is taken by none of the attack methods fgsm, pgd"),
])
def test_a_bad_pipeline_names_file_and_line_before_any_run(tmp_path, body, line, message):
    path = write_pipeline(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        run_pipeline(PipelineConfig(file=str(path), experiment="test"))
    assert str(caught.value).startswith(f"{path}:{line}: ") and message in str(caught.value)
    assert tracking.search_runs() == []


def test_a_setting_no_step_has_and_a_missing_file_are_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("settings:\n  llt_quality: 50\nsteps:\n  train:\n    step: train\n")
    with pytest.raises(ConfigError, match=r"p.yaml:2: setting 'llt_quality' belongs to no step"):
        parse(path)
    path.write_text("settings:\n  data.image_size: 4\nsteps:\n  train:\n    step: train\n")
    with pytest.raises(ConfigError, match=r"p.yaml:2: step 'train': image_size must be at least 8"):
        run_pipeline(PipelineConfig(file=str(path)))
    path.write_text("settings:\n  model_uri: ${train}\nsteps:\n  train:\n    step: train\n")
    with pytest.raises(ConfigError, match=r"p.yaml:2: settings: model_uri holds a reference"):
        parse(path)
    with pytest.raises(ConfigError, match="pipeline file .*nothing.yaml does not exist"):
        parse(tmp_path / "nothing.yaml")


def test_a_grid_over_the_limit_is_refused_before_it_expands(tmp_path):
    values = ", ".join(str(k) for k in range(11))
    path = write_pipeline(tmp_path, f"""\
     attack:
       step: attack
       with: {{model_uri: "models:/m/1"}}
       grid: {{steps: [{values}], seed: [{values}], batch_size: [{values}]}}
     """)
    with pytest.raises(ConfigError, match=r"p.yaml:\d+: step 'attack': its grid makes up to 1,331 runs "
                                          r"\(1,331 with the steps before it\), over max_instances 1,000"):
        expand(parse(path))
    assert len(expand(parse(path), max_instances=1331)) == 1331
    with pytest.raises(ConfigError, match="over max_instances 1,000"):
        run_pipeline(PipelineConfig(file=str(path), dry_run=True))


def test_the_shipped_pipelines_parse_and_every_config_builds(tmp_path):
    from medrobust.steps.pipeline import check
    quick = expand(parse(REPO / "pipelines" / "quick.yaml"))
    check(quick, PipelineConfig(file="pipelines/quick.yaml"))
    counts = Counter(i.spec.step for i in quick)
    # 2 networks; 2 attacks white-box on each and transferred both ways; 3 defenses each;
    # every model evaluated; a recap per network; small_cnn's retrain+llt gated
    assert counts == {"train": 2, "poison": 1, "attack": 8, "defend": 6, "evaluate": 8, "report": 2, "promote": 1}
    from medrobust.steps.pipeline import build_config
    for i in quick:
        for u in i.upstream:
            u.output = f"models:/from-{u.spec.name}/1"
    # retrain+llt takes the retrain step's network with the same retrain settings, not retraining
    combined = build_config(next(i for i in quick if i.spec.name == "combined_resnet"), PipelineConfig())
    retrain = build_config(next(i for i in quick if i.spec.name == "retrain_resnet"), PipelineConfig())
    assert combined.retrained_uri == "models:/from-retrain_resnet/1" and retrain.retrained_uri == ""
    assert (combined.rounds, combined.epochs_per_round) == (retrain.rounds, retrain.epochs_per_round) == (2, 2)
    # `rounds: 2` given once to a grid of defenses goes to those that retrain
    path = write_pipeline(tmp_path, """\
     train:
       step: train
     defend:
       step: defend
       with: {model_uri: "${train}", rounds: 2}
       grid: {defense: [retrain, llt, retrain+llt]}
     """)
    grid = expand(parse(path))
    for i in grid:
        for u in i.upstream:
            u.output = "models:/medrobust-small_cnn/1"
    rounds = {i.label: build_config(i, PipelineConfig()).rounds for i in grid if i.spec.name == "defend"}
    assert rounds == {"defend retrain on small_cnn": 2, "defend llt on small_cnn": 5,
                      "defend retrain+llt on small_cnn": 2}
    # and `max_steps: 30` given once to a grid of attack methods goes to uap_fast alone
    steps = {i.label: build_config(i, PipelineConfig()).max_steps for i in quick if i.spec.name == "attack"}
    assert steps["attack uap_fast 2/255 on small_cnn"] == 30 and steps["attack fgsm 2/255 on small_cnn"] == 200
    labels = [i.label for i in quick]
    assert {"attack fgsm 2/255 on small_resnet", "attack fgsm 2/255 on small_resnet from small_cnn",
            "defend retrain+llt on small_cnn", "evaluate standard,adaptive,health,corruptions on llt on small_resnet",
                "report_small",
            "promote retrain+llt on small_cnn"} <= set(labels)
    evaluate = next(i for i in quick if i.spec.name == "evaluate_resnet")  # a YAML anchor shares settings
    assert build_config(evaluate, PipelineConfig()).max_images == 500
    # the gate runs evaluate's settings on the same images, so it reuses that evaluate run
    gate = build_config(next(i for i in quick if i.spec.step == "promote"), PipelineConfig())
    small = build_config(next(i for i in quick if i.spec.name == "evaluate_small"), PipelineConfig())
    shared = [f.name for f in fields(SuiteConfig) if f.name not in ("run_name", "model_uri")]
    assert {n: getattr(gate, n) for n in shared} == {n: getattr(small, n) for n in shared}
    assert len(set(labels)) == len(labels)  # every run name says what it is
    thesis = parse(REPO / "pipelines" / "thesis.yaml", split_overrides("resnet.weights=/models/r50.h5"))
    assert next(s for s in thesis if s.name == "resnet").settings["weights"] == "/models/r50.h5"
    instances = expand(thesis)
    assert Counter(i.spec.step for i in instances)["poison"] == 7
    with pytest.raises(ConfigError, match="weights file /models/r50.h5 does not exist"):
        check(instances, PipelineConfig(file="pipelines/thesis.yaml"))
    check(expand(parse(REPO / "pipelines" / "thesis.yaml")), PipelineConfig(file="pipelines/thesis.yaml"))
    with pytest.raises(ConfigError, match="--set 'vgg.weights=x': .*thesis.yaml has no step 'vgg'"):
        parse(REPO / "pipelines" / "thesis.yaml", ("vgg.weights=x",))


def test_set_takes_repeated_flags_and_values_with_commas():
    args = vars(build_parser().parse_args(["pipeline", "f.yaml", "--set", "resnet.weights=/a.h5", "--set",
                                           "poison.poison_fractions=0.1,0.3,inception.weights=/b.h5"]))
    assert args["overrides"] == "resnet.weights=/a.h5,poison.poison_fractions=0.1,0.3,inception.weights=/b.h5"
    assert split_overrides(args["overrides"]) == [
        "resnet.weights=/a.h5", "poison.poison_fractions=0.1,0.3", "inception.weights=/b.h5"]
    specs = {s.name: s for s in parse(REPO / "pipelines" / "thesis.yaml", split_overrides(
        "resnet.weights=/a.h5,inception.weights=/b.h5,settings.data.per_class_limit=50"))}
    assert specs["resnet"].settings["weights"] == "/a.h5" and specs["inception"].settings["weights"] == "/b.h5"
    assert specs["attack"].settings["data.per_class_limit"] == 50


def test_the_grid_fans_out_along_lineages_and_lists_gather(tmp_path):
    path = write_pipeline(tmp_path, """\
     train:
       step: train
       grid: {arch: [small_cnn, resnet50]}
     defend:
       step: defend
       with: {model_uri: "${train}"}
       grid: {defense: [retrain, llt]}
     attack:
       step: attack
       with: {model_uri: "${defend}", attack_model_uri: "${train}", eps: 2/255}
     evaluate:
       step: evaluate
       grid: {model_uri: ["${train}", "${defend}"]}
     report:
       step: report
       with: {runs: "${evaluate}"}
     """)
    instances = expand(parse(path))
    counts = Counter(i.spec.name for i in instances)
    # 2 networks x 2 defenses; the transfer attack takes its own network only: 4 attacks, not 8
    assert counts == {"train": 2, "defend": 4, "attack": 4, "evaluate": 6, "report": 1}
    for attack in (i for i in instances if i.spec.name == "attack"):
        assert attack.values["model_uri"].values["model_uri"] is attack.values["attack_model_uri"]
    labels = [i.label for i in instances]
    assert "attack fgsm 2/255 on retrain on resnet50 from resnet50" in labels and "defend llt on small_cnn" in labels
    assert len(set(labels)) == len(labels)
    report = instances[-1]
    assert len(report.values["runs"]) == 6


def _pipeline(tmp_path, ham_dir, llt_quality=75, name="p.yaml"):
    return write_pipeline(tmp_path, f"""\
     train:
       step: train
       with: {{epochs: 1, alias: none}}
     attack:
       step: attack
       with: {{model_uri: "${{train}}", method: fgsm}}
     defend:
       step: defend
       with: {{model_uri: "${{train}}", defense: llt, llt_quality: {llt_quality}, eval_attacks: [fgsm], alias: none}}
     evaluate:
       step: evaluate
       with: {{model_uri: "${{defend}}", suites: [thesis], n_resamples: 20}}
     """, data=ham_dir, name=name)


def _step_runs(experiment="test"):
    """{step: number of finished step runs} (pipeline parents and evaluate's row runs aside)."""
    return Counter(r["step"] for r in tracking.search_runs(experiment)
                   if r["status"] == "FINISHED" and r["step"] in ("train", "attack", "defend", "evaluate"))


def test_reuse_and_a_changed_setting_reruns_exactly_what_lies_downstream(tmp_path, ham_dir):
    first = run_pipeline(PipelineConfig(file=str(_pipeline(tmp_path, ham_dir)), experiment="test"))
    assert [s["reused"] for s in first.instances] == [False] * 4
    assert _step_runs() == {"train": 1, "attack": 1, "defend": 1, "evaluate": 1}
    runs = {r["run_id"]: r for r in tracking.search_runs("test")}
    assert all(runs[s["run_id"]]["parent"] == first.run_id for s in first.instances)
    assert runs[first.instances[1]["run_id"]]["name"] == "attack fgsm 2/255 on small_cnn"

    again = run_pipeline(PipelineConfig(file=str(_pipeline(tmp_path, ham_dir)), experiment="test"))
    assert [s["reused"] for s in again.instances] == [True] * 4
    assert [s["run_id"] for s in again.instances] == [s["run_id"] for s in first.instances]
    assert _step_runs() == {"train": 1, "attack": 1, "defend": 1, "evaluate": 1}

    changed = run_pipeline(PipelineConfig(file=str(_pipeline(tmp_path, ham_dir, llt_quality=50)), experiment="test"))
    assert {s["name"]: s["reused"] for s in changed.instances} == {
        "train": True, "attack": True, "defend": False, "evaluate": False}
    assert _step_runs() == {"train": 1, "attack": 1, "defend": 2, "evaluate": 2}
    assert changed.instances[3]["key"] != first.instances[3]["key"]  # new upstream run, new key


def test_a_gate_that_promoted_its_own_version_is_reused_not_run_again(tmp_path):
    """The gate's moving input is the @robust it compares with; once it has moved @robust to its
    own version the comparison is skipped (run_promote), so the key stays the first run's."""
    from mlflow import MlflowClient
    from medrobust.config import PromoteConfig
    from medrobust.steps.pipeline import moving_inputs

    tracking.search_runs()  # opens the test's store
    client = MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=tmp_path.as_uri())
    config = PromoteConfig(model_uri="models:/m/2")
    first = moving_inputs("promote", config)
    tracking.set_alias("m", "robust", 2)
    assert moving_inputs("promote", config) == first == {"current": None}
    tracking.set_alias("m", "robust", 1)
    assert moving_inputs("promote", config) == {"current": 1}
