"""Compiled attack steps are made once per network, give the same images whatever ran before, and go
with their network (models/tracing.py)."""

import gc
import weakref

import keras
import numpy as np

from medrobust.attacks import compiled, gradient
from medrobust.models import tracing
from medrobust.models import create_model
from medrobust.models.training import set_seed


def _network_and_images(n=90):
    set_seed(0)
    model = create_model("small_resnet", (16, 16, 3), 7)
    rng = np.random.default_rng(0)
    return model, rng.random((n, 16, 16, 3), dtype=np.float32), rng.integers(0, 7, n)


def test_a_step_is_traced_once_for_every_batch_size_and_budget():
    model, x, y = _network_and_images()
    for n, eps in ((90, 2 / 255), (37, 8 / 255), (5, 2 / 255)):  # batches of 64 + 26, 37, 5
        gradient.fgsm(model, x[:n], y=y[:n], eps=eps, batch_size=64)
        compiled.run(model, x[:n], y[:n], eps=eps, steps=2, batch_size=64)
    assert gradient.fgsm_step(model).experimental_get_tracing_count() == 1
    assert compiled.trace(model, "ce").experimental_get_tracing_count() == 1  # one function: the start is a step of 0
    assert compiled.trace(model, "dlr") is not compiled.trace(model, "ce")  # a loss is part of the graph


def test_an_attack_gives_the_same_images_whatever_ran_before_on_its_network():
    model, x, y = _network_and_images()
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    # On `model` first other batch sizes and budgets, then the attack; on its twin the attack alone.
    # With reduce_retracing the second differed (in the last float bit: a relaxed retrace).
    gradient.fgsm(model, x[:37], y=y[:37], eps=8 / 255)
    compiled.run(model, x[:13], y[:13], eps=8 / 255, steps=3)
    compiled.run(model, x[:41], y[:41], eps=4 / 255, steps=3, batch_size=16)
    after_others = compiled.run(model, x, y, eps=4 / 255, steps=10)
    alone = compiled.run(twin, x, y, eps=4 / 255, steps=10)
    np.testing.assert_array_equal(after_others, alone)
    np.testing.assert_array_equal(gradient.fgsm(model, x, y=y, eps=2 / 255), gradient.fgsm(twin, x, y=y, eps=2 / 255))


def test_the_health_attacks_margin_is_one_loss_per_mask():
    mask = np.array([True, False, True, False, False, False, True])
    assert compiled.margin_loss(mask) is compiled.margin_loss(mask.copy())
    assert compiled.margin_loss(mask) is not compiled.margin_loss(~mask)


def test_a_networks_steps_go_with_it():
    model, x, y = _network_and_images(10)
    gradient.fgsm(model, x, y=y, eps=2 / 255)
    gradient.square(model, x, y=y, eps=8 / 255, queries=3)
    assert len(tracing._BY_NETWORK[model]) == 2  # FGSM's step and the forward pass
    network = weakref.ref(model)
    del model
    gc.collect()
    assert network() is None  # nothing kept it: the steps hold their network weakly


def test_predict_logits_gives_what_keras_predict_gives():
    from medrobust.models.training import predict_logits

    model, x, _ = _network_and_images(300)  # two batches of 256: a full one and a part
    np.testing.assert_array_equal(predict_logits(model, x), model.predict(x, batch_size=256, verbose=0))
    assert predict_logits(model, x[:0]).shape == (0, 7)
