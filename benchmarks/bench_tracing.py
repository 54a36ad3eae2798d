"""What TensorFlow's tracing costs an attack call, and what keeping the compiled steps per network
saves (models/tracing.py): FGSM and PGD (10 steps) on a network seen for the first time (its
steps made and traced in the call, as every call paid before the steps were kept) against the
same call on a network whose steps are already made, side by side in one run, on small_cnn at
32 px (untrained: tracing does not depend on the weights). Each first call gets a fresh clone of
the network, made outside the timer. Then prediction: Keras' model.predict (what predict_logits
called before) against predict_logits (the network's compiled forward pass, kept per network).

Run by hand (never in the test suite): .venv/bin/python benchmarks/bench_tracing.py
"""

import time

import keras
import numpy as np

from medrobust.attacks import gradient
from medrobust.models import create_model
from medrobust.models.training import predict_logits


def median_seconds(call, prepare=lambda: None, repeats=5):
    """Median wall time of call(prepare()) over `repeats` calls after one warm-up; prepare is not timed."""
    call(prepare())
    times = []
    for _ in range(repeats):
        argument = prepare()
        start = time.perf_counter()
        call(argument)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    model = create_model("small_cnn", (32, 32, 3), 7)
    eps = 2 / 255
    print("| attack | images | first call on a network (s) | later calls (s) | ratio |")
    print("|---|---|---|---|---|")
    for n in (20, 200):
        x = np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32)
        y = np.arange(n) % 7
        for name, attack in (("fgsm", lambda net: gradient.fgsm(net, x, y=y, eps=eps)),
                             ("pgd 10 steps", lambda net: gradient.pgd(net, x, y=y, eps=eps, steps=10))):
            first = median_seconds(attack, prepare=lambda: keras.models.clone_model(model))
            later = median_seconds(lambda _: attack(model))
            print(f"| {name} | {n} | {first:.3f} | {later:.3f} | {first / later:.1f} |")
    print("\n| prediction | images | model.predict (s) | predict_logits (s) | ratio |")
    print("|---|---|---|---|---|")
    for n in (8, 200, 1000):
        x = np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32)
        np.testing.assert_array_equal(predict_logits(model, x), model.predict(x, batch_size=256, verbose=0))
        keras_s = median_seconds(lambda _: model.predict(x, batch_size=256, verbose=0))
        ours_s = median_seconds(lambda _: predict_logits(model, x))
        print(f"| logits | {n} | {keras_s:.4f} | {ours_s:.4f} | {keras_s / ours_s:.1f} |")


if __name__ == "__main__":
    main()
