"""Perturbation budgets: projection onto an L-inf or L2 ball and the [0, 1] image box."""

import numpy as np

from ..config import NORMS  # noqa: F401 - defined once, with the settings that take a norm
from ..errors import ConfigError


def check_norm(norm: str) -> str:
    """`norm` as one of NORMS ('linf', 'L2', 'np.inf' are accepted); ConfigError otherwise."""
    norm = str(norm).lower().replace("np.inf", "inf").replace("linf", "inf").replace("l2", "2")
    if norm not in NORMS:
        raise ConfigError(f"norm must be 'inf' or '2', got {norm!r}")
    return norm


def art_norm(norm: str) -> float:
    """Our norm name as ART wants it."""
    return np.inf if check_norm(norm) == "inf" else 2


def project(delta: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Project each perturbation of `delta` (N, ...) onto the `norm` ball of radius eps."""
    delta = np.asarray(delta, dtype=np.float32)
    if check_norm(norm) == "inf":
        return np.clip(delta, -eps, eps)
    flat = delta.reshape(len(delta), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    scale = np.minimum(1.0, eps / np.maximum(norms, 1e-12))
    return (flat * scale).reshape(delta.shape).astype(np.float32)


def apply_budget(x: np.ndarray, x_adv: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """x_adv moved into the budget around x and into [0, 1].

    Clipping to [0, 1] after the projection only shortens each component of the perturbation
    (x itself lies in [0, 1]), so both constraints hold at once, up to float32 rounding.
    """
    delta = project(np.asarray(x_adv, dtype=np.float32) - x, eps, norm)
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


def perturbation_sizes(x: np.ndarray, x_adv: np.ndarray) -> dict[str, float]:
    """{'linf_max', 'linf_mean', 'l2_max', 'l2_mean', 'psnr'} of x_adv - x over N images.

    psnr is the mean over images of 10 log10(1 / MSE) in dB (peak 1.0); identical images
    count as 100 dB rather than infinity.
    """
    delta = (np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)).reshape(len(x), -1)
    linf = np.abs(delta).max(axis=1)
    l2 = np.linalg.norm(delta, axis=1)
    mse = (delta**2).mean(axis=1)
    psnr = np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-20)), 100.0)
    return {"linf_max": float(linf.max()), "linf_mean": float(linf.mean()), "l2_max": float(l2.max()),
            "l2_mean": float(l2.mean()), "psnr": float(psnr.mean())}
