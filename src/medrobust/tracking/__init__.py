"""The only package that talks to MLflow. Steps import `tracking` and call what it exports:

- store: where tracking goes ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here);
- runs: a run's lifecycle and what it logs;
- registry: versions registered all or nothing, aliases, the promotion lock;
- models: every version logged as one pyfunc contract, and loaded back;
- queries: read-only questions about runs and artifacts.
"""

from .models import (ClassifierPyfunc, load_classifier, load_keras_model, log_classifier, model_run_id,
                     model_run_params, pyfunc_predict, serves_contract, serving_signature)
from .models import DefendedPyfunc  # noqa: F401  (defended versions logged when tracking was one module name it)
from .queries import (download_artifact, experiment_name, finished_runs, get_run, list_artifacts, load_json_artifact,
                      load_text_artifact, metric_history, run_inputs, search_runs)
from .registry import (model_aliases, model_version_tags, model_versions, pinned_uri, promotion_lock, register_model,
                       registered_version, set_alias, tag_model_version)
from .runs import (active_run_id, fail_orphaned_runs, recover_store, log_array, log_bytes, log_dataset, log_figure, log_json,
                   log_metrics, log_params, log_text, params_match, run, set_tags, tag_run)
from .store import tracking_uri

__all__ = [name for name in dir() if not name.startswith("_") and name not in {"models", "queries", "registry",
                                                                              "runs", "store"}]
