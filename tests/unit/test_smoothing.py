"""Randomized smoothing (defenses/smoothing.py) and its certificate (evaluation/certified.py) on a
linear toy network, whose exact certified radius is its distance to the decision boundary."""

import keras
import numpy as np
import pytest
from scipy import stats

from medrobust.data import malignant_mask
from medrobust.defenses import DefendedClassifier, load_defended
from medrobust.defenses.smoothing import abstains, certify, vote_counts, vote_logits
from medrobust.evaluation.certified import certified_counts, violations

SHAPE = (4, 4, 3)


def linear_network(w, b):
    """Logits (0, w.x - b, -50, ...): class 1 (bcc, malignant) where w.x > b, else 0 (akiec)."""
    inputs = keras.Input(SHAPE)
    dense = keras.layers.Dense(7)
    outputs = dense(keras.layers.Flatten()(inputs))
    kernel = np.zeros((int(np.prod(SHAPE)), 7), dtype=np.float32)
    kernel[:, 1] = w
    bias = np.full(7, -50.0, dtype=np.float32)
    bias[0], bias[1] = 0.0, -b
    dense.set_weights([kernel, bias])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    size = int(np.prod(SHAPE))
    # unit normal (w.x - b is the signed L2 distance to the boundary), small entries: 0.5 + 2 w is an image
    w = (rng.choice((-1.0, 1.0), size=size) / np.sqrt(size)).astype(np.float32)
    b = float(0.5 * w.sum())
    distance = np.linspace(-2.0, 2.0, 24)  # images on a line across the boundary, 0.5 + d w
    x = (0.5 + distance[:, None] * w[None, :]).reshape(24, *SHAPE).astype(np.float32)
    assert 0 <= x.min() and x.max() <= 1
    return linear_network(w, b), x, x.reshape(24, -1) @ w - b


def test_the_vote_is_seeded_counts_every_sample_and_its_logits_give_the_shares(toy):
    network, x, _ = toy
    counts = vote_counts(network, x, sigma=0.25, samples=50, seed=1)
    assert counts.shape == (24, 7) and (counts.sum(axis=1) == 50).all() and counts[:, 2:].sum() == 0
    np.testing.assert_array_equal(counts, vote_counts(network, x, sigma=0.25, samples=50, seed=1))
    # an image's noise is its own: the same votes alone, in another order, or in another batch
    again = vote_counts(network, x[::-1], sigma=0.25, samples=50, seed=1, batch_size=100)
    np.testing.assert_array_equal(again[::-1], counts)
    shares = np.exp(vote_logits(counts))
    assert np.allclose(shares / shares.sum(axis=1, keepdims=True), (counts + 0.5) / (50 + 3.5))


def test_abstention_is_cohens_binomial_test_of_the_top_two():
    counts = np.array([[50, 0, 0, 0, 0, 0, 0], [26, 24, 0, 0, 0, 0, 0], [40, 10, 0, 0, 0, 0, 0]])
    assert abstains(counts, 0.001).tolist() == [False, True, False]
    assert stats.binomtest(40, 50, 0.5).pvalue < 0.001 < stats.binomtest(26, 50, 0.5).pvalue


def test_the_certificate_is_sound_and_tight_on_a_linear_network(toy):
    network, x, distance = toy
    sigma, n, alpha = 0.25, 2000, 0.001
    predicted, radius = certify(network, x, sigma=sigma, n0=100, n=n, alpha=alpha, seed=0)
    certified = predicted >= 0
    assert certified.sum() >= 12
    assert (predicted[certified] == (distance[certified] > 0)).all()  # the side of the boundary x lies on
    # sound: never beyond the true distance to the boundary (the exact radius of a linear base)
    assert (radius[certified] <= np.abs(distance[certified]) + 1e-6).all()
    # and tight up to the confidence bound: all n votes on one side give sigma * Phi^-1(alpha^(1/n))
    cap = sigma * stats.norm.ppf(alpha ** (1 / n))
    far = np.abs(distance) > cap + 4 * sigma
    assert far.any() and np.allclose(radius[far], cap, rtol=1e-3)
    np.testing.assert_array_equal(predicted, certify(network, x, sigma=sigma, n0=100, n=n, alpha=alpha, seed=0)[0])


def test_certified_counts_count_an_abstention_or_a_small_radius_as_a_missed_cancer():
    malignant = malignant_mask("clinical")  # akiec, bcc, mel
    y = np.array([1, 1, 1, 5, 4])
    predicted = np.array([1, -1, 5, 5, 4])
    radius = np.array([0.3, 0.0, 0.4, 0.2, 0.05])
    counts = certified_counts(y, predicted, radius, malignant, radii=(0.0, 0.1))
    assert counts[0.0]["certified_accuracy"].tolist() == [True, False, False, True, True]
    assert counts[0.1]["certified_accuracy"].tolist() == [True, False, False, True, False]
    assert counts[0.0]["certified_miss"].tolist() == [False, True, True, False]  # the 4 cancers
    assert counts[0.1]["certified_miss"].tolist() == [False, True, True, True]


def test_a_smoothed_classifier_saves_votes_abstains_and_attacks_through_noise(toy, tmp_path):
    network, x, distance = toy
    classifier = DefendedClassifier(network, smoothing={"sigma": 0.25, "samples": 40, "alpha": 0.001, "seed": 0})
    loaded = load_defended(classifier.save(tmp_path / "smoothed"))
    assert loaded.smoothing == classifier.smoothing and loaded.can_reject
    np.testing.assert_array_equal(loaded.logits(x), classifier.logits(x))
    near = np.abs(distance) < 0.1  # the two images nearest the boundary, 0.087 from it
    assert loaded.rejected(x)[near].all() and not loaded.rejected(x)[np.abs(distance) > 1.5].any()
    attacked = loaded.as_keras()
    assert not np.array_equal(attacked(x[:2]).numpy(), attacked(x[:2]).numpy())  # fresh noise on every call
    plain = load_defended(DefendedClassifier(network).save(tmp_path / "plain"))
    assert plain.smoothing is None and not plain.can_reject


def test_the_attack_check_confirms_a_broken_certificate_and_not_a_sound_one(toy):
    """An image moved across the boundary loses its certified class, which a fresh vote confirms;
    one moved less than its certified radius does not: the check that could call a certificate
    wrong, and does only when it is."""
    network, x, distance = toy
    w = (x[-1] - x[0]).reshape(-1) / (distance[-1] - distance[0])  # the unit normal
    predicted, radius = certify(network, x, sigma=0.25, n0=100, n=1000, alpha=0.001, seed=0)
    far = np.flatnonzero((predicted >= 0) & (np.abs(distance) > 1.0))
    smoothed = DefendedClassifier(network, smoothing={"sigma": 0.25, "samples": 100, "alpha": 0.001, "seed": 0})
    towards = -np.sign(distance[far])[:, None]
    inside = (x[far].reshape(len(far), -1) + towards * radius[far, None] * 0.9 * w).reshape(len(far), *SHAPE)
    across = (x[far].reshape(len(far), -1) + towards * (np.abs(distance[far]) + 1.0)[:, None] * w).reshape(len(far), *SHAPE)
    assert violations(smoothed, inside.astype(np.float32), predicted[far], n=1000, alpha=0.001) == 0
    assert violations(smoothed, across.astype(np.float32), predicted[far], n=1000, alpha=0.001) == len(far) > 0
