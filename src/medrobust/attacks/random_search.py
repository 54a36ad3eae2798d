"""Square (Andriushchenko et al. 2020), L-inf, untargeted: ours, as the authors' code runs it.

ART's SquareAttack falls short in two ways that matter here: it queries the model three times
an iteration (every image, then the robust ones' old and new points), and it draws one square
for the whole batch. On a defense whose forward pass is costly (`llt`'s WebP per image) the
queries are the whole cost, and one square for all images is a weaker search. Here each
iteration queries only the images not yet fooled, once, each at its own random square; the
margin of the true label is kept per image and a change kept only if it lowers it.
`square_art` keeps ART's as an independent check (tests/steps/test_counting.py compares them).
"""

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from .. import stopping
from ..models import tracing

if TYPE_CHECKING:
    import keras

# The authors' schedule of the square's share of the image, by progress through 10,000 queries:
# p_init until 10, then halved at each of these bounds.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def share(p_init: float, iteration: int, queries: int) -> float:
    """The square's area as a share of the image at `iteration` of `queries` (the paper's p)."""
    progress = int(iteration / queries * 10000)
    return p_init / 2 ** sum(progress > bound for bound in _SCHEDULE)


def _margins(forward, images, labels):
    """(N,) logit of the true label minus the largest other: below 0 means fooled."""
    logits = forward(tf.constant(images)).numpy()
    rows = np.arange(len(labels))
    own = logits[rows, labels].copy()
    logits[rows, labels] = -np.inf
    return own - logits.max(axis=1)


def _search(forward, x, labels, *, eps, queries, p_init, rng):
    """One batch: the authors' vertical-stripe start, then `queries - 1` square proposals."""
    n, h, w, c = x.shape
    best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, 1, w, c)), 0.0, 1.0).astype(np.float32)
    margin = _margins(forward, best, labels)
    for iteration in range(queries - 1):
        stopping.checkpoint()
        active = np.flatnonzero(margin > 0)
        if not len(active):
            break
        side = min(max(int(round(np.sqrt(share(p_init, iteration, queries) * h * w))), 1), h - 1, w - 1)
        proposal = best[active]
        for j, i in enumerate(active):
            top, left = rng.integers(0, h - side), rng.integers(0, w - side)
            window = (slice(top, top + side), slice(left, left + side))
            for _ in range(16):  # the authors redraw until the window changes; all 2^c signs rarely clip alike
                new = np.clip(x[i][window] + eps * rng.choice([-1.0, 1.0], size=(1, 1, c)), 0.0, 1.0)
                if np.abs(new - proposal[j][window]).max() > 1e-7:
                    break
            proposal[j][window] = new
        found = _margins(forward, proposal, labels[active])
        better = found < margin[active]
        best[active[better]] = proposal[better]
        margin[active[better]] = found[better]
    return best


def square(model: "keras.Model", x: np.ndarray, labels: np.ndarray, *, eps: float, queries: int = 5000,
           p_init: float = 0.8, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """Square on the Keras `model`: x (N, H, W, 3) float32 in [0, 1], labels (N,) true classes,
    `queries` queries per image at most (one an iteration, the start included), random squares
    and signs drawn with `seed`. Returns adversarial images (N, H, W, 3) within eps of x (L-inf)."""
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    forward = tracing.forward(model)
    rng = np.random.default_rng(seed)
    out = x.copy()
    for start in range(0, len(x), batch_size):
        part = slice(start, start + batch_size)
        out[part] = _search(forward, x[part], labels[part], eps=eps, queries=queries, p_init=p_init, rng=rng)
    return out
