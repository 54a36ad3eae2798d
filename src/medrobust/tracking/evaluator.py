"""medrobust as an MLflow model evaluator (entry point group `mlflow.model_evaluator`), so that

    mlflow.models.evaluate("models:/medrobust-small_cnn@robust", data, targets="label",
                           model_type="classifier", evaluators=["medrobust"],
                           evaluator_config={"medrobust": {"suites": ["standard", "health"]}})

measures a version as `medrobust evaluate` does, into the run mlflow.models.evaluate opened.
Only the MLflow side lives here (the ModelEvaluator class, its dataset and result types); the
measurement is the function medrobust/evaluator.py hands to `model_evaluator`, so this package
imports no step.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, JsonEvaluationArtifact, TextEvaluationArtifact
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from ..errors import MedrobustError
from .models import ClassifierPyfunc

if TYPE_CHECKING:
    from mlflow.data.evaluation_dataset import EvaluationDataset

    from ..defenses import DefendedClassifier

log = logging.getLogger(__name__)

# What the measurement leaves in the run, as MLflow's artifact types: {name: (path, type)}.
ARTIFACTS = {"report": ("report/report.html", TextEvaluationArtifact),
             "records": ("report/records.csv", CsvEvaluationArtifact),
             "headline": ("report/headline.json", JsonEvaluationArtifact)}


def model_evaluator(measure: Callable[["DefendedClassifier", pd.DataFrame | np.ndarray, np.ndarray, dict[str, Any]],
                                      dict[str, float] | None]) -> type[ModelEvaluator]:
    """A ModelEvaluator class whose evaluate() calls measure(classifier, features, labels,
    settings) -> {metric: value}, with the version's DefendedClassifier, the dataset's features
    (a DataFrame or a 2-D array) and labels, and the evaluator_config; measure logs into the
    active run. A medrobust error (a bad setting, image or label) becomes an MlflowException
    INVALID_PARAMETER_VALUE naming it. A model that is no medrobust version is skipped (None),
    so that `mlflow.models.evaluate` without `evaluators`, which asks every registered evaluator,
    evaluates other models as before."""

    class MedrobustEvaluator(ModelEvaluator):
        @classmethod
        def can_evaluate(cls, *, model_type: str, evaluator_config: dict[str, Any] | None, **kwargs: Any) -> bool:
            return model_type == "classifier"

        def evaluate(self, *, model_type: str, dataset: "EvaluationDataset", run_id: str,
                     evaluator_config: dict[str, Any] | None, model: "mlflow.pyfunc.PyFuncModel | None" = None,
                     **kwargs: Any) -> EvaluationResult | None:
            python_model = None if model is None else model.unwrap_python_model()
            if not isinstance(python_model, ClassifierPyfunc):
                # mlflow.models.evaluate without `evaluators` asks every registered evaluator:
                # another kind of model is not ours to judge, and the others go on without us.
                log.info("the medrobust evaluator measures medrobust model versions only; skipped")
                return None
            if dataset.labels_data is None:
                raise MlflowException("the medrobust evaluator needs the true labels: give targets=<column>",
                                      error_code=INVALID_PARAMETER_VALUE)
            try:
                metrics = measure(python_model.classifier, dataset.features_data, dataset.labels_data,
                                  dict(evaluator_config or {}))
            except MedrobustError as e:
                raise MlflowException(f"medrobust evaluator: {e}", error_code=INVALID_PARAMETER_VALUE) from None
            if metrics is None:  # a flat config meant for MLflow's own evaluator
                log.info("the medrobust evaluator was given none of its settings; skipped")
                return None
            artifacts = {name: kind(uri=mlflow.get_artifact_uri(path)) for name, (path, kind) in ARTIFACTS.items()}
            return EvaluationResult(metrics, artifacts, run_id)

    return MedrobustEvaluator


__all__ = ["ARTIFACTS", "model_evaluator"]
