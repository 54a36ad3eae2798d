"""medrobust as an MLflow evaluator, called the way an MLflow user calls any evaluator:

    .venv/bin/python experiments/mlflow_evaluate.py [--model-uri models:/medrobust-small_cnn@baseline] [--images 200]

Builds a DataFrame of HAM10000 test-split image paths (relative to the data folder) and labels,
then `mlflow.models.evaluate(..., evaluators=["medrobust"])` with the standard and health suites,
in a run of its own in experiment `mlflow-evaluate`; prints the headline metrics and where the
report is.
"""

import argparse
import os

import mlflow
import pandas as pd

from medrobust.config import DataConfig
from medrobust.data import CLASSES, image_ids, images, load_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/medrobust-small_cnn@baseline")
    parser.add_argument("--data", default=os.environ.get("MEDROBUST_DATA", "../shared/data/ham10000"))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    data = load_dataset(DataConfig(path=args.data, image_size=args.image_size))
    ids = image_ids(data, "test", args.images, 0)
    labels = images(data, "test", args.images, 0)[1]
    frame = pd.DataFrame({"path": [f"images/{i}.jpg" for i in ids], "label": [CLASSES[k] for k in labels]})

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow.set_experiment("mlflow-evaluate")
    with mlflow.start_run(run_name="mlflow.models.evaluate with medrobust") as run:
        result = mlflow.models.evaluate(
            args.model_uri, frame, targets="label", model_type="classifier", evaluators=["medrobust"],
            evaluator_config={"medrobust": {"suites": ["standard", "health"], "image_root": args.data,
                                            "apgd_steps": 10, "apgd_targets": 3, "square_queries": 200}})
    for name in ("clean_accuracy", "clean_fnr", "worst_accuracy", "worst_fnr", "worst_op_fnr"):
        print(f"{name}: {result.metrics[name]:.3f}")
    print(f"run {run.info.run_id}; report: {result.artifacts['report'].uri}")


if __name__ == "__main__":
    main()
