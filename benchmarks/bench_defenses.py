"""What an input-transformation defense costs at prediction time, side by side in one run:
images/s of the bare network against the same network behind each transformation.

Run by hand (never in the test suite), against a trained model in the tracking store:
  MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python benchmarks/bench_defenses.py \\
      --model-uri models:/medrobust-small_cnn/1 --data ../shared/data/ham10000
"""

import argparse
import time

from medrobust import tracking
from medrobust.config import DataConfig
from medrobust.data import load_dataset
from medrobust.defenses import TRANSFORMS, DefendedClassifier


def images_per_second(classifier, x, repeats=3):
    classifier.logits(x[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.logits(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-uri", default="models:/medrobust-small_cnn/1")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    network = tracking.load_keras_model(args.model_uri)
    x = load_dataset(DataConfig(path=args.data, image_size=int(network.input_shape[1])), progress=False).x["test"]
    print(f"model {args.model_uri}, {len(x)} test images of {x.shape[1]} px, best of 3\n")
    bare = images_per_second(DefendedClassifier(network), x)
    print("| prediction | images/s | ratio to the bare network |\n|---|---|---|")
    print(f"| bare network | {bare:.0f} | 1.00 |")
    for name, (_, defaults, _) in TRANSFORMS.items():
        rate = images_per_second(DefendedClassifier(network, ((name, dict(defaults)),)), x)
        settings = ", ".join(f"{k} {v}" for k, v in defaults.items())
        print(f"| {name} ({settings}) + network | {rate:.0f} | {rate / bare:.2f} |")


if __name__ == "__main__":
    main()
