"""The configurations of the steps that measure, search, gate, recap and orchestrate."""

from dataclasses import dataclass

from ..data.labels import CLASSES, HEALTH_MAPS
from ..errors import ConfigError
from .settings import (BASELINE_URI, CANDIDATE_URI, SPLITS, Settings, at_least, between, each, eps_range, non_empty, positive, setting)
from .build import ModelStepConfig, StepConfig, TrainConfig

EVALUATE_SUITES = ("thesis", "standard", "adaptive", "autoattack", "health", "corruptions", "certified", "full")


@dataclass(frozen=True)
class SuiteConfig(ModelStepConfig):
    """The attack suites a model is measured with and their settings: what `evaluate` runs, and
    what a `promote` gate runs (or reuses, when an evaluate run of the version matches)."""

    suites: tuple[str, ...] = setting(("standard",), "presets: thesis (fgsm, uap, uap_fast, transfer), standard "
                                                     "(AutoAttack's standard version: APGD-CE, APGD-T, Square, "
                                                     "white-box; fgsm and pgd, white-box and transfer), adaptive (white-box "
                                                     "through the whole defense: BPDA, APGD-CE, a joint attack on "
                                                     "classifier and detector), autoattack (AutoAttack alone, "
                                                     "white-box), health (APGD on the malignancy score against the "
                                                     "operating threshold), corruptions (natural shifts at severities "
                                                     "1 to 5: no attack), certified (randomized smoothing's L2 "
                                                     "certificate, checked by L2 PGD; not in full: it costs "
                                                     "thousands of forward passes an image), full (thesis, standard, adaptive, health, "
                                                     "corruptions + security curves); every attack suite adds the per-image worst case "
                                                     "over its attacks, the ensemble row",
                                      choices=EVALUATE_SUITES, check=non_empty)
    eps: float = setting(2 / 255, "budget of the suites' attacks", check=eps_range)
    curve_eps: tuple[float, ...] = setting((0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
                                           "full: the budgets of the security curves", check=lambda v: non_empty(v)
                                           or each(eps_range)(v))
    curve_attacks: tuple[str, ...] = setting(("fgsm", "pgd", "uap_fast"), "full: the attacks of the security curves",
                                             check=non_empty)
    corruptions: tuple[str, ...] = setting((), "corruptions: which (evaluation/corruptions.py names them: "
                                                "gaussian_noise, defocus_blur, jpeg, hair, vignette, ...); none "
                                                "given: all 13")
    severities: tuple[int, ...] = setting((1, 2, 3, 4, 5), "corruptions: the severities measured",
                                          check=lambda v: non_empty(v) or each(between(1, 5))(v))
    certify_sigma: float | None = setting(None, "certified: noise of the smoothed classifier; none: the model's own "
                                                "(a smoothing defense), else 0.25", check=between(0, 1, low_open=True))
    certify_samples: int = setting(1000, "certified: noise samples bounding each image's top class (a tenth more "
                                         "choose it)", check=at_least(10))
    certify_alpha: float = setting(0.001, "certified: the certificate fails with probability at most this",
                                   check=between(0, 1, low_open=True, high_open=True))
    certify_images: int = setting(100, "certified: a class-stratified sample of the measured images certified",
                                  check=at_least(1))
    max_images: int | None = setting(None, "measure a class-stratified sample of N images (seeded; CPU budgets)", check=at_least(1))
    target_sensitivity: float = setting(0.95, "operating point: the malignancy threshold is chosen on the validation "
                                              "split to catch this share of cancers",
                                        check=between(0, 1, low_open=True, high_open=True))
    n_resamples: int = setting(1000, "bootstrap resamples of the test images for the 95 % intervals", check=at_least(10))
    pgd_steps: int = setting(20, "pgd: iterations (random start)", check=at_least(1))
    cw_steps: int = setting(20, "cw_pgd: iterations (random start)", check=at_least(1))
    uap_max_steps: int = setting(60, "uap_fast: mini-batch steps", check=at_least(1))
    uap_max_iter: int = setting(1, "uap (ART): passes over the images", check=at_least(1))
    apgd_steps: int = setting(100, "apgd, autoattack's APGD-CE and APGD-T, health: iterations (RobustBench: 100)",
                              check=at_least(1))
    square_queries: int = setting(5000, "autoattack's Square: queries (RobustBench: 5000)", check=at_least(1))
    apgd_targets: int = setting(9, "apgd_t and autoattack's APGD-T: target classes, at most K - 1 (RobustBench: 9)",
                                check=at_least(1))
    health_restarts: int = setting(1, "health: random starts of its APGD", check=at_least(1))


@dataclass(frozen=True)
class EvaluateConfig(SuiteConfig):
    """A model (plain or defended) measured clean and under an attack suite: a report."""

    split: str = setting("test", "images measured; all: every image of the data (an external test set)",
                         choices=(*SPLITS, "all"))
    attack_model_uri: str | None = setting(None, "surrogate for transfer attacks; none: a defended model's "
                                                 "undefended parent (transfer rows are left out for a plain model)")
    threshold: float | None = setting(None, "operating point given, not chosen (e.g. for an external set with no "
                                            "validation split); none: chosen on the validation split",
                                      check=between(0, 1))


TUNE_OBJECTIVES = ("attack_eps", "poison_fraction", "defense", "train")


@dataclass(frozen=True)
class TuneConfig(ModelStepConfig):
    """One Optuna study; every trial a nested run calling the steps themselves."""

    objective: str = setting("attack_eps", "attack_eps: smallest eps reaching a fooling rate; poison_fraction: the "
                                           "flip fraction doing most harm per flipped label; defense: retraining "
                                           "settings maximising robust macro recall; train: training settings "
                                           "maximising validation macro recall", choices=TUNE_OBJECTIVES)
    n_trials: int = setting(8, "trials this worker runs", check=at_least(1))
    timeout: float | None = setting(None, "stop starting trials after this many seconds; none: no limit",
                                    check=positive)
    study_name: str | None = setting(None, "Optuna study (workers sharing one give the same); none: medrobust-<objective>")
    storage: str | None = setting(None, "Optuna storage URL (sqlite:///..., postgresql://...); none: optuna.db beside "
                                        "the SQLite tracking store")
    heartbeat: int = setting(30, "seconds between a trial's heartbeats; a trial silent for twice this is failed "
                                 "and retried by the next worker", check=at_least(1))
    max_images: int | None = setting(300, "attack_eps, defense: a class-stratified sample of N test images",
                                     check=at_least(1))
    # attack_eps
    method: str = setting("fgsm", "attack_eps: the attack")
    eps_max: float = setting(16 / 255, "attack_eps: the largest budget searched", check=eps_range)
    eps_step: float = setting(1 / 255, "attack_eps: the search step (the answer is a multiple of it)",
                              check=between(0, 1, low_open=True))
    target_fooling_rate: float = setting(0.5, "attack_eps: the fooling rate to reach",
                                         check=between(0, 1, low_open=True))
    # poison_fraction
    source: str = setting("nv", "poison_fraction: class whose training labels are flipped", choices=CLASSES)
    target: str = setting("bkl", "poison_fraction: class they are flipped to", choices=CLASSES)
    fraction_max: float = setting(0.6, "poison_fraction: the largest fraction searched", check=between(0, 1, low_open=True))
    fnr_increase: float = setting(0.05, "poison_fraction: report the smallest fraction raising FNR this much",
                                  check=between(0, 1))
    trial_epochs: int = setting(6, "poison_fraction, train: training epochs per trial", check=at_least(1))
    # defense
    defense: str = setting("retrain+llt", "defense: the spec tuned (retrain settings, llt quality)")
    suites: tuple[str, ...] = setting(("adaptive",), "defense: evaluate suites measuring each trial",
                                      choices=EVALUATE_SUITES, check=non_empty)
    max_rounds: int = setting(3, "defense: most retrain rounds tried", check=at_least(1))
    max_accuracy_loss: float = setting(0.05, "defense: trials losing more clean accuracy are infeasible",
                                       check=between(0, 1))
    multi_objective: bool = setting(False, "defense: the Pareto front of robust macro recall against clean FNR")

    def validate(self) -> None:
        super().validate()
        apart = [s for s in self.suites if s in ("corruptions", "certified")]
        if apart:  # the defense objective reads the attack ensemble, which these suites do not make
            raise ConfigError(f"tune's suites are attack suites; {', '.join(apart)} measure no attack", ["suites"])
        if self.fraction_max < 0.05:
            raise ConfigError(f"fraction_max must be at least 0.05 (the search step), got {self.fraction_max!r}",
                              ["fraction_max"])
        if self.eps_step > self.eps_max:
            raise ConfigError(f"eps_step {self.eps_step:g} is larger than eps_max {self.eps_max:g}", ["eps_step"])


@dataclass(frozen=True)
class PromoteConfig(SuiteConfig):
    """A registry gate: the version at model_uri is evaluated with the suite settings (or an
    evaluate run of it with the same settings is reused) and moves to @robust only if it passes
    every criterion."""

    model_uri: str = setting(CANDIDATE_URI, "the version to promote: models:/<name>@<alias> or models:/<name>/<version>")
    suites: tuple[str, ...] = setting(("standard", "health"), "evaluate suites of the gate", choices=EVALUATE_SUITES,
                                      check=non_empty)
    min_robust_macro_recall: float | None = setting(0.35, "pass only if the worst macro recall under attack is at least "
                                                          "this; none: not checked", check=between(0, 1))
    max_attacked_fnr: float | None = setting(0.5, "pass only if the worst FNR under attack at the operating point "
                                                  "(op_fnr) is at most this; none: not checked", check=between(0, 1))
    max_corrupted_fnr: float | None = setting(None, "pass only if the worst op_fnr over the natural corruptions at "
                                                    "corruption_severity is at most this (needs the corruptions "
                                                    "suite); none: not checked", check=between(0, 1))
    corruption_severity: int = setting(3, "max_corrupted_fnr: the severity it reads", check=between(1, 5))
    max_accuracy_loss: float | None = setting(0.03, "pass only if clean accuracy is at most this below the current "
                                                    "@robust version's on the same images; none: not checked",
                                              check=between(0, 1))
    reuse: bool = setting(True, "reuse a finished evaluate run of this version with the same settings")
    alias: str = setting("robust", "alias the version moves to on a pass")
    previous_alias: str = setting("previous", "alias the replaced version gets")

    def validate(self) -> None:
        super().validate()
        if self.max_corrupted_fnr is None:
            return
        if not {"corruptions", "full"} & set(self.suites):
            raise ConfigError("max_corrupted_fnr reads the corruptions suite: add corruptions to suites",
                              ["max_corrupted_fnr", "suites"])
        if self.corruption_severity not in self.severities:
            raise ConfigError(f"corruption_severity {self.corruption_severity} is not among the severities measured "
                              f"({', '.join(map(str, self.severities))})", ["corruption_severity"])


@dataclass(frozen=True)
class ReportConfig(StepConfig):
    """The recap across evaluate runs: the comparison table and the thesis' recap curves."""

    runs: tuple[str, ...] = setting((), "evaluate run ids to compare; none given: every finished evaluate run of "
                                        "--experiment, the latest per model", positional=True)
    metrics: tuple[str, ...] = setting(("accuracy", "macro_recall", "macro_specificity", "fnr", "op_fnr",
                                        "delta_accuracy", "delta_fnr"),
                                       "figures compared (the evaluate step's metric names; delta_*: a defended "
                                       "model minus its parent on the same images, paired interval)",
                                       check=non_empty)


@dataclass(frozen=True)
class PipelineConfig(StepConfig):
    """A YAML grid of steps (pipelines/*.yaml) run as one parent run, each step a nested run;
    a step already finished with the same configuration, inputs and code is reused."""

    file: str = setting("pipelines/quick.yaml", "the pipeline file", positional=True)
    overrides: str | None = setting(None, "STEP.SETTING=VALUE: a change of the file for this run (STEP may be "
                                          "`settings`); repeat --set, or join several with commas",
                                    flag="set", repeat=True)
    rerun: bool = setting(False, "run every step again instead of reusing finished ones")
    dry_run: bool = setting(False, "print the steps and which would be reused; run nothing")
    max_instances: int = setting(1000, "refuse a file whose grids make more runs than this", check=at_least(1))


@dataclass(frozen=True)
class BaselineConfig(TrainConfig):
    """The baseline job (`make baseline`): train the baseline, attack it with each of `attacks`, defend
    it with `defense` and attack the defended model again, all nested under one run."""

    attacks: tuple[str, ...] = setting(("fgsm", "uap_fast"), "attacks run on the baseline, white-box")
    eps: float = setting(2 / 255, "budget of every attack of the job (the thesis' FGSM budget)", check=eps_range)
    # 60 uap_fast steps of 128 images cost about a minute on 2 cores and keep `make baseline` inside
    # 30 minutes (the attack step's own default is 200).
    uap_max_steps: int = setting(60, "uap_fast's step limit", check=at_least(1))
    # Two rounds of two epochs keep the job inside 30 minutes on 2 cores; the thesis' 5 x 5 (the
    # defend step's default) is GPU-scale.
    defense: str = setting("retrain+llt", "defense built and measured after the attacks; none: stop after them")
    rounds: int = setting(2, "retrain rounds", check=at_least(1))
    epochs_per_round: int = setting(2, "retrain epochs per round", check=at_least(1))
    evaluate_suites: tuple[str, ...] | None = setting(("standard", "adaptive", "health"), "evaluate suites run last, on the "
                                               "defended model (the baseline with defense none); none: no evaluate run",
                                               choices=EVALUATE_SUITES)
    # 500 of the 1,252 test images keep the evaluate run near eight minutes on 2 cores.
    evaluate_images: int | None = setting(500, "evaluate: a class-stratified sample of N test images; none: all",
                                          check=at_least(1))


@dataclass(frozen=True)
class PredictConfig(Settings):
    """Class probabilities and the health call for image files (no MLflow run)."""

    inputs: tuple[str, ...] = setting((), "image files or folders", check=non_empty, positional=True)
    model_uri: str = setting(BASELINE_URI, "runs:/<id>/model or models:/<name>@<alias> (defended or not)")
    output: str = setting("-", "CSV file to write; -: standard output")
    health_map: str = setting("clinical", "which classes count as malignant", choices=tuple(HEALTH_MAPS))
    threshold: float | None = setting(None, "operating point on the malignancy score; none: the model version's "
                                            "operating_threshold tag (set by train, defend or evaluate), else the one it carries", check=between(0, 1))
