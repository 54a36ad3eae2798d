"""What a fit's first trace costs when Keras builds the compiled metrics inside it, against
building them before (models/training.py::_compile), side by side in one run.

Keras 3 builds a compiled model's metrics in the first trace of its train step unless a
distribution strategy is set; a variable made in a tf.function's first trace makes TensorFlow
trace the function a second time. Each row times Keras' own `fit` (one epoch of two batches of
32, the optimizer's slots built before, as `_compile` does) of a fresh network, compiled as
`_compile` compiles it, with the metrics left to Keras against built first by one eager
`compute_metrics`, alternating, medians over `--repeats`; and counts the train step's traces.
The networks are untrained: tracing does not depend on the weights.

Run by hand (never in the test suite): .venv/bin/python benchmarks/bench_fit.py
"""

import argparse
import time

import keras
import numpy as np

from medrobust.models import create_model
from medrobust.models.training import optimizer

NETWORKS = (("small_cnn", 32), ("small_resnet", 32), ("mobilenet_v2", 32))


def one_fit(arch, size, x, y, *, metrics_first):
    """(seconds of model.fit, train step traces) for a fresh `arch` network."""
    model = create_model(arch, (size, size, 3), 7)
    model.compile(optimizer=optimizer(1e-3, 2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    if metrics_first:
        model.compute_metrics(x[:1], y[:1], model(x[:1], training=False))
    traces, step = [], model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start, len(traces)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| network | size | fit, metrics built in the trace (s) | traces | fit, metrics built first (s) | traces | ratio |")
    print("|---|---|---|---|---|---|---|")
    for arch, size in NETWORKS:
        rng = np.random.default_rng(0)
        x, y = rng.random((64, size, size, 3), dtype=np.float32), np.arange(64) % 7
        one_fit(arch, size, x, y, metrics_first=True)  # warm-up: imports, kernels
        inside, first = [], []
        for _ in range(args.repeats):
            inside.append(one_fit(arch, size, x, y, metrics_first=False))
            first.append(one_fit(arch, size, x, y, metrics_first=True))
            keras.backend.clear_session()
        a, b = np.median([s for s, _ in inside]), np.median([s for s, _ in first])
        print(f"| {arch} | {size} | {a:.2f} | {inside[0][1]} | {b:.2f} | {first[0][1]} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
