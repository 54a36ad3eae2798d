"""The `tune` step: one Optuna study per call. Every trial is one MLflow run nested under the
study's parent run (tagged with its Optuna trial number and state); inside it the trial calls
the steps themselves (run_attack, run_poison, run_defend + run_evaluate, run_train), whose runs
nest under the trial's.

Objectives (objectives.py, OBJECTIVES: a name picks how a trial suggests, measures and scores):
- attack_eps: the smallest eps (a multiple of eps_step up to eps_max) at which the attack
  reaches the target fooling rate. The fooling rate rises with eps, so the trials bisect the
  grid (each midpoint enqueued into the study) instead of sampling it: log2 of the grid's size
  in trials, and the answer is exact on the grid. TPE would spend trials on points a bisection
  already rules out.
- poison_fraction: the fraction of source labels flipped to target that does the most harm per
  flipped label (FNR rise against a clean reference model trained alike, per 100 flipped
  labels); TPE; each epoch's validation macro recall is reported, and the median pruner stops a
  trial behind the others.
- defense: the retraining ratio, rounds, epochs per round, retraining attack (and WebP quality
  when the spec has llt) maximising the worst macro recall under `suites`, subject to clean
  accuracy lost <= max_accuracy_loss (an Optuna constraint); --multi-objective: the Pareto
  front of that robust macro recall against clean FNR (NSGA-II).
- train: learning rate, weight decay, dropout, small_cnn's width, class weighting (none, sqrt,
  balanced: the exponent 0, 0.5, 1), augmentation and batch size maximising validation macro
  recall; pruned per epoch; the first trial of a new study is today's defaults.

Storage: --storage, or optuna.db beside the SQLite tracking store; postgresql:// lets workers
on several machines share one study (load_if_exists) when they ask the same question (a study
remembers its settings; other settings under its name are refused). Trials of the TPE and
NSGA-II objectives send heartbeats; a trial whose worker died is failed by the next worker to
start one and retried once with its parameters.
"""

import logging
from collections import Counter
from dataclasses import dataclass

from ... import tracking
from ...config import TuneConfig, flatten
from ...errors import StudyFailed
from .objectives import OBJECTIVES, train_defaults
from .study import _best, _log_study, _trial_run, _trials, open_study, sampler_for, sampler_seed

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    run_id: str  # the study's parent run
    study_name: str
    storage: str
    best_params: dict  # of the best trial ({} if none completed); for multi-objective, of the first on the front
    best_value: float | tuple | None
    trials: list  # [{"number", "state", "params", "values", "run_id"}] of this study, every worker's
    summary: dict  # objective-specific findings (attack_eps: the eps; poison: the smallest harmful fraction)


def run_tune(config: TuneConfig) -> TuneResult:
    """Run config.n_trials trials of config.objective in one Optuna study; see TuneResult."""
    objective_entry = OBJECTIVES[config.objective]
    objective_entry.check(config)
    study, url = open_study(config, objective_entry.directions(config))
    tags = {"medrobust.step": "tune", "optuna.study": study.study_name, "medrobust.objective": config.objective}
    name = config.run_name or f"tune {config.objective}"
    with tracking.run(config.experiment, run_name=name, tags=tags) as run_id:
        tracking.log_params(flatten(config) | {"storage": url.split("@")[-1]})  # no password in a parameter
        context = objective_entry.prepare(config, study)
        objective = _trial_run(config, study, lambda t: objective_entry.trial(t, config, context))
        summary = dict(objective_entry.drive(config, study, objective, context))
        trials = _trials(study, config.experiment)
        best_params, best_value = _best(study, config)
        summary |= objective_entry.conclude(config, study)
        _log_study(study, trials, best_params, best_value, summary, config)
        if best_value is None:  # inside the run: a study that answered nothing is a failed run
            states = Counter(t["state"] for t in trials)
            raise StudyFailed(f"tune {config.objective}: no trial of study {study.study_name} finished "
                              f"({', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items())) or 'none ran'}); "
                              f"its trials' runs are in run {run_id}")
    log.info("tune %s: run %s, study %s, %d trials; best %s = %s%s", config.objective, run_id, study.study_name,
             len(trials), best_params, best_value, f"; {summary}" if summary else "")
    return TuneResult(run_id, study.study_name, url, best_params, best_value, trials, summary)


__all__ = ["OBJECTIVES", "TuneResult", "run_tune", "sampler_for", "sampler_seed", "train_defaults"]
