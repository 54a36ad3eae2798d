"""A tune study: its storage, sampler, one MLflow run per trial, and what it logs."""

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from ... import plots, tracking
from ...config import TuneConfig, flatten
from ...errors import ConfigError
from .objectives import OBJECTIVES, Pruned, constraint

log = logging.getLogger(__name__)


def default_storage() -> str:
    """optuna.db beside the SQLite tracking store, else in the working folder."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def open_study(config: TuneConfig, directions: Sequence[str]) -> tuple[optuna.Study, str]:
    """(study, storage URL); ConfigError naming a storage that cannot be reached, before any run."""
    url = config.storage or default_storage()
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # Optuna marks the retry callback experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=config.heartbeat, grace_period=2 * config.heartbeat,
                heartbeat_stale_trial_callback=retry)
            break
        except Exception as e:  # SQLAlchemy's errors for a URL, driver or server it cannot use
            # Workers starting together on a new database race to create its tables; the
            # loser finds them made a moment later.
            racing = any(s in str(e) for s in ("duplicate key", "already exists"))
            if not racing or attempt == 2:
                raise ConfigError(f"cannot open Optuna storage {url}: {str(e).splitlines()[0]}") from e
            time.sleep(1 + attempt)
    name = config.study_name or f"medrobust-{config.objective}"
    sampler, pruner = sampler_for(config), optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                directions=list(directions), load_if_exists=True)
    # A study is resumed (by this worker later, or by others) only for the same question.
    settings = study_settings(config)
    found = study.user_attrs.get("medrobust_settings")
    if found is None and not study.trials:
        study.set_user_attr("medrobust_settings", settings)
    elif found != settings or [d.name.lower() for d in study.directions] != list(directions):
        differ = sorted(k for k in set(settings) | set(found or {}) if (found or {}).get(k) != settings.get(k))
        raise ConfigError(f"study {name} in {url} was made for other settings ({', '.join(differ) or 'directions'}); "
                          "give another --study-name")
    study.sampler = sampler_for(config, n_existing=len(study.trials))
    return study, url


def study_settings(config: TuneConfig) -> dict[str, str]:
    """What a study answers: every setting but the worker's own (trials, time, storage, names)."""
    own = ("n_trials", "timeout", "study_name", "storage", "heartbeat", "experiment", "run_name", "data.cache_dir")
    return {k: str(v) for k, v in flatten(config).items() if k not in own}


def sampler_seed(seed: int, n_existing: int) -> int:
    """The sampler's seed for a worker that opens a study holding `n_existing` trials: `seed` for
    a new study (deterministic by seed), else one drawn from (seed, n_existing), so that a resumed
    study or a worker joining later does not draw the first worker's parameters again."""
    return seed if n_existing == 0 else int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0])


def sampler_for(config: TuneConfig, n_existing: int = 0) -> optuna.samplers.BaseSampler:
    """The objective's sampler, seeded by sampler_seed."""
    return OBJECTIVES[config.objective].sampler(config, sampler_seed(config.seed, n_existing))


def _record_failed(trial):
    """The parameters a trial drew and optuna.trial_state FAIL on its run, as it ends; a store
    that cannot take them is logged, never allowed to hide what ended the trial."""
    try:
        tracking.log_params(trial.params)
        tracking.set_tags({"optuna.trial_state": "FAIL"})
    except Exception as e:  # noqa: BLE001 - the trial's own error is the one raised
        log.warning("trial %d: could not record its parameters on its run (%s)", trial.number, e)


def _trial_run(config, study, run_trial):
    """Optuna's objective: one nested MLflow run per trial, its state tagged as Optuna's."""
    def objective(trial):
        tags = {"medrobust.step": "tune-trial", "optuna.study": study.study_name, "optuna.trial": str(trial.number)}
        try:
            with tracking.run(config.experiment, run_name=f"trial {trial.number}", tags=tags):
                try:
                    values = run_trial(trial)
                except Pruned:
                    tracking.log_params(trial.params)
                    tracking.set_tags({"optuna.trial_state": "PRUNED"})
                    raise  # the trial's run ends KILLED, as its steps' did
                except BaseException:  # a failed trial, SIGTERM, Ctrl-C: its run still says what it tried
                    _record_failed(trial)
                    raise
                tracking.log_params(trial.params)
                values = values if isinstance(values, tuple) else (values,)
                tracking.log_metrics({f"value_{i}" if len(values) > 1 else "value": v for i, v in enumerate(values)}
                                     | {k: float(v) for k, v in trial.user_attrs.items() if isinstance(v, (int, float))})
                tracking.set_tags({"optuna.trial_state": "COMPLETE"})
        except Pruned as e:
            raise optuna.TrialPruned(str(e)) from e
        return values if len(values) > 1 else values[0]
    return objective


def _best(study, config):
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if OBJECTIVES[config.objective].constrained:
        complete = [t for t in complete if constraint(t)[0] <= 0]  # feasible only
    if not complete:
        return {}, None
    if len(study.directions) > 1:
        front = study.best_trials
        return (front[0].params, tuple(front[0].values)) if front else ({}, None)
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(complete, key=lambda t: t.value)
    return best.params, best.value


def _trials(study, experiment):
    """This study's trials with the MLflow run each left (by its optuna.trial tag)."""
    runs = {r["tags"].get("optuna.trial"): r["run_id"] for r in tracking.finished_runs(
        experiment, {"medrobust.step": "tune-trial", "optuna.study": study.study_name},
        statuses=("FINISHED", "KILLED"))}
    return [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
             "run_id": runs.get(str(t.number))} for t in study.trials]


def _log_study(study, trials, best_params, best_value, summary, config):
    if best_value is not None:
        tracking.log_params({f"best.{k}": v for k, v in best_params.items()})
        values = best_value if isinstance(best_value, tuple) else (best_value,)
        tracking.log_metrics({f"best_value_{i}" if len(values) > 1 else "best_value": v for i, v in enumerate(values)})
    tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    tracking.log_json({"best_params": best_params, "best_value": best_value, **summary}, "tune/best.json")
    tracking.log_text(study.trials_dataframe().to_csv(index=False), "tune/trials.csv")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    figures = {"history": lambda: optuna.visualization.matplotlib.plot_optimization_history(
        study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)}
    if len(study.directions) > 1:
        figures["pareto_front"] = lambda: optuna.visualization.matplotlib.plot_pareto_front(study)
    elif len(complete) > 1 and len(best_params) > 1:
        figures["importances"] = lambda: optuna.visualization.matplotlib.plot_param_importances(study)
    for name, draw in figures.items():
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib figures experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw()
        except (ValueError, RuntimeError) as e:  # too few trials for a figure: said, not fatal
            log.warning("tune: no %s figure (%s)", name, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        tracking.log_figure(fig, f"tune/{name}.png")
        plots.close(fig)
