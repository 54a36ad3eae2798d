"""Square: ours (attacks/random_search.py) against ART's SquareAttack, side by side in one run, on the
same correctly classified test images, queries and seeds: seconds and the robust accuracy each
leaves (right clean and right attacked; lower is the stronger search).

Run by hand (never in the test suite), against a trained model in the tracking store:
  MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python benchmarks/bench_square.py \\
      --model-uri models:/medrobust-small_cnn/1 --data ../shared/data/ham10000
"""

import argparse
import time

import numpy as np

from medrobust import tracking
from medrobust.attacks.art_reference import square_art
from medrobust.attacks.gradient import square
from medrobust.config import DataConfig
from medrobust.data import load_dataset
from medrobust.models.training import predict_logits
from medrobust.data import images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/medrobust-small_cnn/1")
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=300, help="class-stratified test images, then the right ones")
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--queries", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    network = tracking.load_classifier(args.model_uri).as_keras()
    size = int(network.input_shape[1])
    x, y = images(load_dataset(DataConfig(path=args.data, image_size=size)), "test", args.images, 0)
    right = predict_logits(network, x).argmax(axis=1) == y
    x, y = x[right], y[right]
    print(f"{args.model_uri}: {len(x)} correctly classified test images at {size} px, eps {args.eps * 255:.0f}/255")
    print("queries  seed  ours: robust acc, s  ART: robust acc, s  speed-up")
    for queries in args.queries:
        for seed in args.seeds:
            row = []
            for attack in (square, square_art):
                start = time.perf_counter()
                adv = attack(network, x, y=y, eps=args.eps, queries=queries, seed=seed)
                seconds = time.perf_counter() - start
                row.append((float(np.mean(predict_logits(network, adv).argmax(axis=1) == y)), seconds))
            (ours, t_ours), (art, t_art) = row
            print(f"{queries:7d}  {seed:4d}  {ours:.4f}, {t_ours:5.1f}      {art:.4f}, {t_art:5.1f}      "
                  f"{t_art / t_ours:.1f}x")


if __name__ == "__main__":
    main()
