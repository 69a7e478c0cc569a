"""From the network's outputs to reported ages (numpy only, shared by every backend)."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def expected_age(probs: np.ndarray) -> np.ndarray:
    """DEX: sum_i i * p_i."""
    return probs @ np.arange(probs.shape[-1], dtype=probs.dtype)


def age_interval(probs: np.ndarray, coverage: float = 0.8) -> np.ndarray:
    """(N, 2) central interval of the predicted age distribution, e.g. its 10% and 90% quantiles.

    Quantiles are read off the piecewise-linear CDF, treating class ``i`` as ages [i - 0.5, i + 0.5].
    """
    lo_q, hi_q = (1 - coverage) / 2, 1 - (1 - coverage) / 2
    cdf = np.cumsum(probs, axis=-1)
    edges = np.arange(probs.shape[-1] + 1, dtype=np.float64) - 0.5
    out = np.empty((probs.shape[0], 2))
    for i, row in enumerate(cdf):
        full = np.concatenate([[0.0], row])
        out[i] = np.interp([lo_q, hi_q], full, edges)
    return np.clip(out, 0, probs.shape[-1] - 1)


def median_age(probs: np.ndarray) -> np.ndarray:
    """The distribution's median, read off the piecewise-linear CDF as :func:`age_interval` reads its quantiles:
    a long tail toward the crowded middle ages moves it less than it moves the expectation."""
    cdf = np.cumsum(probs, axis=-1)
    k = np.minimum((cdf < 0.5).sum(axis=-1), probs.shape[-1] - 1)  # the first class whose CDF reaches 0.5
    rows = np.arange(len(k))
    below = np.where(k > 0, cdf[rows, np.maximum(k - 1, 0)], 0.0)
    return k - 0.5 + (0.5 - below) / np.maximum(probs[rows, k], 1e-12)


#: how an age is read off the network's outputs (the model record's ``estimate``)
ESTIMATES = ("dex", "reg", "mean", "median")


def combine(logits: np.ndarray, reg: np.ndarray, how: str = "dex") -> np.ndarray:
    """The reported age: DEX expectation, regression, their mean, or the distribution's median (as the model
    record says)."""
    if how not in ESTIMATES:
        raise ValueError(f"unknown estimate {how!r}; choose {', '.join(ESTIMATES)}")
    if how == "reg":
        return reg.astype(np.float64)
    probs = softmax(logits.astype(np.float64))
    if how == "median":
        return median_age(probs)
    dex = expected_age(probs)
    return dex if how == "dex" else 0.5 * (dex + reg)
