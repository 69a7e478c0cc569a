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


def combine(logits: np.ndarray, reg: np.ndarray, how: str = "dex") -> np.ndarray:
    """The reported age: DEX expectation, regression, or their mean (as the model record says)."""
    if how not in ("dex", "reg", "mean"):
        raise ValueError(f"unknown estimate {how!r}; choose dex, reg or mean")
    if how == "reg":
        return reg.astype(np.float64)
    dex = expected_age(softmax(logits.astype(np.float64)))
    return dex if how == "dex" else 0.5 * (dex + reg)
