"""Attack speed, side by side in one run on one model and one set of images.

1. FGSM images/s against the model's plain forward+backward images/s (the limit is 1.0):
   FGSM costs one input gradient per image, so the ratio shows the wrapper's overhead; ART's
   FastGradientMethod and our compiled `fgsm` are both measured.
2. ART's `uap` against our `uap_fast` at the same eps: ART's UAP runs first; uap_fast is then
   asked for the fooling rate ART reached, and the two times are compared.
3. The iterative attacks the evaluate step runs most, on the true labels: our compiled PGD-CE
   (`pgd`), APGD-CE (`apgd`), APGD-DLR and cw_pgd against ART's PGD (`pgd_art`) and APGD-CE
   (`apgd_art`), the same steps on the same images: image-steps/s (one input gradient per image
   per step) against the same forward+backward rate (1.0 would be no overhead at all), and the
   robust accuracy each leaves (right clean and right attacked), which ours must match.

Run by hand (never in the test suite), against a trained model in the tracking store:
  MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python benchmarks/bench_attacks.py \\
      --model-uri models:/medrobust-small_cnn/1 --data ../shared/data/ham10000
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from medrobust import tracking
from medrobust.attacks import craft
from medrobust.config import DataConfig
from medrobust.data import load_dataset
from medrobust.models.training import predict_logits


def forward_backward_images_per_s(model, x, batch_size):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def grad(xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = loss_fn(yb, model(xb, training=False))
        return tape.gradient(loss, xb)

    y = predict_logits(model, x).argmax(axis=1)
    grad(tf.constant(x[:batch_size]), tf.constant(y[:batch_size]))  # trace once
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        grad(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size])).numpy()
    return len(x) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-uri", default="models:/medrobust-small_cnn/1")
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=256, help="images for the universal attacks")
    parser.add_argument("--fgsm-images", type=int, default=1252, help="images for FGSM (a compiled attack traces once per call)")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="iterations of pgd and apgd")
    parser.add_argument("--iterative-only", action="store_true", help="part 3 alone")
    args = parser.parse_args()
    model = tracking.load_keras_model(args.model_uri)
    data = load_dataset(DataConfig(path=args.data, image_size=int(model.input_shape[1])), progress=False)
    x = data.x["test"][: args.images]
    clean = predict_logits(model, x).argmax(axis=1)
    print(f"model {args.model_uri}, {len(x)} test images of {x.shape[1]} px, eps {args.eps:.4f} (L-inf)\n")
    if not args.iterative_only:
        fgsm_and_universal(model, data, x, clean, args)
    iterative(model, data, x, args)


def fgsm_and_universal(model, data, x, clean, args):

    craft("fgsm", model, x[:8], args.eps)  # warm-up
    craft("fgsm_art", model, x[:8], args.eps)
    x_fgsm = data.x["test"][: args.fgsm_images]
    fb = forward_backward_images_per_s(model, x_fgsm, args.batch_size)
    rates = {}
    for method in ("fgsm_art", "fgsm"):
        start = time.perf_counter()
        craft(method, model, x_fgsm, args.eps, batch_size=args.batch_size)
        rates[method] = len(x_fgsm) / (time.perf_counter() - start)
    print(f"FGSM on {len(x_fgsm)} images, each attack's tracing included\n")
    print("| measurement | images/s | ratio to forward+backward |\n|---|---|---|")
    print(f"| forward + backward (input gradient) | {fb:.0f} | 1.00 |")
    print(f"| FGSM through ART (`fgsm_art`) | {rates['fgsm_art']:.0f} | {rates['fgsm_art'] / fb:.2f} |")
    print(f"| our compiled FGSM (`fgsm`, the default) | {rates['fgsm']:.0f} | {rates['fgsm'] / fb:.2f} |\n")

    def fooling(x_adv):
        return float(np.mean(predict_logits(model, x_adv).argmax(axis=1) != clean))

    start = time.perf_counter()
    x_uap, _ = craft("uap", model, x, args.eps, uap_attacker="fgsm", uap_max_iter=5, uap_delta=0.2)
    art_s = time.perf_counter() - start
    art_rate = fooling(x_uap)
    start = time.perf_counter()
    x_fast, _ = craft("uap_fast", model, x, args.eps, target_fooling_rate=max(art_rate, 1e-6), max_steps=500,
                      eval_every=5, batch_size=args.batch_size)
    fast_s = time.perf_counter() - start
    fast_rate = fooling(x_fast)
    print("| universal attack | fooling rate | seconds |\n|---|---|---|")
    print(f"| ART `uap` (fgsm inner, max_iter 5) | {art_rate:.3f} | {art_s:.1f} |")
    print(f"| our `uap_fast` (stops at ART's rate) | {fast_rate:.3f} | {fast_s:.1f} |")
    print(f"| time ratio uap_fast / uap | | {fast_s / art_s:.3f} |\n")



def iterative(model, data, x, args):
    fb_iter = forward_backward_images_per_s(model, x, args.batch_size)
    y = data.y["test"][: args.images]
    right_clean = predict_logits(model, x).argmax(axis=1) == y
    print(f"PGD and APGD on {len(x)} images, true labels, {args.steps} steps, eps {args.eps:.4f} "
          f"(clean accuracy {right_clean.mean():.3f})\n")
    print("| attack | seconds | image-steps/s | ratio to forward+backward | robust accuracy |\n|---|---|---|---|---|")
    print(f"| forward + backward (input gradient) | | {fb_iter:.0f} | 1.00 | |")
    for label, method, params in (("`pgd` (ours)", "pgd", {"steps": args.steps, "random_start": True}),
                                  ("`pgd_art` (ART)", "pgd_art", {"steps": args.steps, "random_start": True}),
                                  ("`apgd` CE (ours)", "apgd", {"steps": args.steps}),
                                  ("`apgd_art` CE (ART)", "apgd_art", {"steps": args.steps}),
                                  ("`apgd` DLR (ours)", "apgd", {"steps": args.steps, "loss": "dlr"}),
                                  ("`cw_pgd` (ours)", "cw_pgd", {"steps": args.steps})):
        craft(method, model, x[:8], args.eps, y=y[:8], **params)  # warm-up
        start = time.perf_counter()
        x_adv, _ = craft(method, model, x, args.eps, y=y, batch_size=args.batch_size, **params)
        seconds = time.perf_counter() - start
        rate = len(x) * args.steps / seconds
        robust = float(np.mean(right_clean & (predict_logits(model, x_adv).argmax(axis=1) == y)))
        print(f"| {label} | {seconds:.1f} | {rate:.0f} | {rate / fb_iter:.2f} | {robust:.3f} |")


if __name__ == "__main__":
    main()
