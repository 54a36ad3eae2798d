"""Evaluation: a model measured clean and under (attack, eps, threat model) conditions, as
long-format records, with rejection counted both ways. Pure: no MLflow, no argument parsing.

    conditions = suite(("fgsm", "uap_fast"), 2 / 255, params={"uap_fast": {"max_steps": 60}})
    result = measure(defended, x, y, conditions, surrogate=parent_network, seed=0)
    result.records          # [{"model", "attack", "threat", "eps", "metric", "value"}, ...]
    result.get("defended", "fgsm", "whitebox").predictions   # per-image, for intervals
    flat_metrics(result.records)   # {"clean_accuracy": ..., "adv_fgsm_whitebox_fnr": ...}
    wide_table(result.records)     # {"parent clean": {...}, "fgsm white-box": {...}}

scoring.py scores one set of predictions, worst.py counts the per-image worst case over attacks
(as AutoAttack and RobustBench do), suite.py measures a model, records.py turns the
records into the flat names MLflow logs, a wide table and CSV. Apart from the attacks:
corruptions.py and shift.py (natural corruptions, paired against clean) and certified.py
(randomized smoothing's certificate).
"""

from .records import (CERTIFIED, CLEAN, CORRUPTION, ENSEMBLE, FIELDS, THREATS, Record, by_condition, column_title,
                      condition_name, flat_metrics, measured_apart, record, records_csv, wide_table)
from .scoring import Scores, evaluate, score, with_rejection
from .suite import ATTACKED, Condition, Evaluation, Measurement, add_measurement, ensembles, measure, suite
from .worst import harm, worst_predictions, worst_scores
from .intervals import (INTERVAL_METRICS, batched_summary, bootstrap_confusion, bootstrap_indices, bootstrap_metrics,
                        interval_summary, overlap, paired_difference, percentile_interval)
from .operating_point import health_at_threshold, malignancy_score, roc, threshold_for_sensitivity
from .report import headline, headline_text, overlap_notes, render_html, rows, security_curves

__all__ = ["ATTACKED", "CERTIFIED", "CLEAN", "CORRUPTION", "ENSEMBLE", "FIELDS", "Record", "measured_apart", "add_measurement", "ensembles", "harm", "paired_difference",
           "worst_predictions", "worst_scores", "THREATS", "Condition", "Evaluation", "Measurement", "Scores",
           "by_condition", "column_title", "condition_name", "evaluate", "flat_metrics", "measure", "record",
           "records_csv", "score", "suite", "wide_table", "with_rejection",
           "INTERVAL_METRICS", "batched_summary", "bootstrap_confusion", "bootstrap_indices", "bootstrap_metrics",
           "interval_summary", "overlap", "percentile_interval",
           "health_at_threshold", "malignancy_score", "roc", "threshold_for_sensitivity",
           "headline", "headline_text", "overlap_notes", "render_html", "rows", "security_curves"]
