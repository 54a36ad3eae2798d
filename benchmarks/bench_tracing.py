"""What TensorFlow's tracing costs an attack call: FGSM and PGD (10 steps) as they run today, a new
tf.function made (and traced) on every call, against the same compiled step made once and reused,
side by side in one run, on small_cnn at 32 px (untrained: tracing does not depend on the weights).
The evidence for caching the compiled steps per network (benchmarks/README.md).

Run by hand (never in the test suite): .venv/bin/python benchmarks/bench_tracing.py
"""

import time

import numpy as np
import tensorflow as tf

from medrobust.attacks import compiled, gradient
from medrobust.models import create_model


def median_seconds(fn, repeats=5):
    """Median wall time of fn() over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    model = create_model("small_cnn", (32, 32, 3), 7)
    eps = 2 / 255
    print("| attack | images | new tf.function per call (s) | one reused (s) | ratio |")
    print("|---|---|---|---|---|")
    for n in (20, 200):
        x = np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32)
        y = np.arange(n) % 7
        step = gradient._fgsm_step(model, "inf", False)

        def fgsm_reused():
            for i in range(0, n, 128):
                step(tf.constant(x[i:i + 128]), tf.constant(eps, tf.float32), tf.constant(y[i:i + 128], tf.int32)).numpy()

        traced = compiled.trace(model, "ce")
        rows = (("fgsm", lambda: gradient.fgsm(model, x, y=y, eps=eps), fgsm_reused),
                ("pgd 10 steps", lambda: compiled.run(model, x, y, eps=eps, steps=10, adaptive=False),
                 lambda: compiled.run(model, x, y, eps=eps, steps=10, adaptive=False, traced=traced)))
        for name, fresh, reused in rows:
            a, b = median_seconds(fresh), median_seconds(reused)
            print(f"| {name} | {n} | {a:.3f} | {b:.3f} | {a / b:.1f} |")


if __name__ == "__main__":
    main()
