"""The per-image worst case over attacks, as AutoAttack and RobustBench count robustness. Pure numpy.

An image is robust at a budget only if the model is right on it clean and under every attack
of the suite at that budget (or any smaller one: a smaller ball lies inside the larger). So a
condition's figures are counted, per image, on the candidate that did the most harm: the clean
image (which lies in every ball) and each attack's adversarial image. Counted this way an
attacked figure can never beat the clean one, the suite's ensemble row is at most every
per-attack row, and robust accuracy never rises with eps.

Harm, per image (`harm`): 0 right; 1 wrong, the health call unchanged (a cancer called another
malignant class); 2 wrong with the health call flipped (a cancer called benign, a benign lesion
called malignant). The argmax figures take the most harmful candidate, the first on ties
(candidates are given clean first, so an attack that changes nothing counts as the clean image).
The operating point's figures take, per image, the most harmful malignancy score: the lowest
for a cancer, the highest for a benign lesion (`worst_scores`).

    counted = worst_predictions(y, [clean_pred, fgsm_pred, pgd_pred], malignant_mask())
    scores = worst_scores(malignant_mask()[y], [clean_score, fgsm_score, pgd_score])
"""

from collections.abc import Iterable, Sequence

import numpy as np


def harm(y_true: np.ndarray, predictions: np.ndarray, malignant: np.ndarray) -> np.ndarray:
    """Harm of predictions (..., N) against y_true (N,): int array of predictions' shape, 0
    right, 1 wrong with the same benign / malignant call as the truth, 2 the call flipped.
    malignant: bool (K,) mask of the malignant classes."""
    y_true, predictions = np.asarray(y_true), np.asarray(predictions)
    malignant = np.asarray(malignant, dtype=bool)
    wrong = predictions != y_true
    flipped = malignant[predictions] != malignant[y_true]
    return wrong.astype(np.int64) + flipped.astype(np.int64)


def worst_choice(y_true: np.ndarray, candidates: Iterable[np.ndarray], malignant: np.ndarray) -> np.ndarray:
    """(N,) index into `candidates` of the most harmful prediction per image (first on ties).
    candidates: a sequence of C prediction arrays (N,)."""
    stack = np.stack([np.asarray(c) for c in candidates])
    if stack.ndim != 2 or stack.shape[1] != len(y_true):
        raise ValueError(f"candidates must be (N,) predictions for the {len(y_true)} images, got shape {stack.shape}")
    return harm(y_true, stack, malignant).argmax(axis=0)  # argmax takes the first maximum


def worst_predictions(y_true: np.ndarray, candidates: Sequence[np.ndarray], malignant: np.ndarray) -> np.ndarray:
    """(N,) per image the most harmful of `candidates` (sequence of (N,) predictions), the
    first on ties: the predictions a suite's figures count."""
    stack = np.stack([np.asarray(c) for c in candidates])
    return stack[worst_choice(y_true, stack, malignant), np.arange(stack.shape[1])]


def worst_scores(is_malignant: np.ndarray, candidates: Sequence[np.ndarray]) -> np.ndarray:
    """(N,) per image the most harmful malignancy score of `candidates` (sequence of (N,)
    scores): the lowest for a malignant image, the highest for a benign one."""
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in candidates])
    is_malignant = np.asarray(is_malignant, dtype=bool)
    return np.where(is_malignant, stack.min(axis=0), stack.max(axis=0))


__all__ = ["harm", "worst_choice", "worst_predictions", "worst_scores"]
