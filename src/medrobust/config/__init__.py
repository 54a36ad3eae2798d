"""Typed configuration: every setting defined once, with its type, default, help text and check.

A step takes one of these dataclasses. The CLI generates its options from them (cli.py), a
pipeline or a tuning trial builds one with `from_dict`, and MLflow logs `flatten(config)`.
`from_dict` coerces text ("32", "2/255", "true", "fgsm,pgd", "none") to each field's type, so
the CLI, MLproject and YAML all go through the same checks, and an unknown key is an error
naming it.
"""

from .settings import (ARCHITECTURE_NAMES, BASELINE_URI, CANDIDATE_URI, CLASS_WEIGHTS, EPS_NOTE, NONE_TEXT, NORMS,
                       SPLITS, Settings, at_least, between, coerce, each, eps_range, flatten, narrow, non_empty,
                       positive, setting, split_fractions)
from .build import (AttackConfig, DataConfig, DefendConfig, ModelStepConfig, PoisonConfig, StepConfig, TrainConfig)
from .measure import (BaselineConfig, EVALUATE_SUITES, EvaluateConfig, PipelineConfig, PredictConfig, PromoteConfig,
                      ReportConfig, SuiteConfig, TUNE_OBJECTIVES, TuneConfig)
