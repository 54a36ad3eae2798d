"""Training throughput (images/s) of each architecture at 64 and 224 px.

Run by hand (never in the test suite):  .venv/bin/python benchmarks/bench_train.py
Times full training steps (forward, backward, Adam update) on random images after two
warm-up steps; the pixel values do not change the cost. InceptionV3 needs at least 75 px,
so its small size is 75. Prints a markdown table for benchmarks/README.md.
"""

import argparse
import os
import time

import numpy as np
import keras
import tensorflow as tf

from medrobust.models import create_model

SIZES = {"small_cnn": (64, 224), "resnet50": (64, 224), "inception_v3": (75, 224)}


def throughput(arch, size, batch, steps):
    model = create_model(arch, (size, size, 3), 7)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 7, batch)
    for _ in range(2):
        model.train_on_batch(x, y)
    t = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - t), model.count_params()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--archs", default=",".join(SIZES))
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    print(f"device: {'GPU ' + gpus[0].name if gpus else f'CPU, {os.cpu_count()} cores'}; batch {args.batch}, "
          f"{args.steps} timed steps\n")
    print("| architecture | parameters | size | train images/s |")
    print("|---|---|---|---|")
    for arch in args.archs.split(","):
        for size in SIZES[arch]:
            ips, params = throughput(arch, size, args.batch, args.steps)
            print(f"| {arch} | {params / 1e6:.1f} M | {size} | {ips:.1f} |", flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
