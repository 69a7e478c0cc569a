"""From the network's outputs to reported ages (numpy only, shared by every backend)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _steps(k: int, dtype: str = "float64", start: float = 0.0) -> np.ndarray:
    """``start, start + 1, ..., start + k - 1`` (read-only): the class ages, or their edges. Made once per size."""
    out = np.arange(k, dtype=dtype) + np.asarray(start, dtype)
    out.flags.writeable = False
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def expected_age(probs: np.ndarray) -> np.ndarray:
    """DEX: sum_i i * p_i."""
    return probs @ _steps(probs.shape[-1], probs.dtype.name)


def age_interval(probs: np.ndarray, coverage: float = 0.8) -> np.ndarray:
    """(N, 2) central interval of the predicted age distribution, e.g. its 10% and 90% quantiles.

    Quantiles are read off the piecewise-linear CDF, treating class ``i`` as ages [i - 0.5, i + 0.5].
    """
    quantiles = _quantiles(coverage)
    n, k = probs.shape
    cdf = np.zeros((n, k + 1), probs.dtype)  # the CDF at the class edges, from 0 at the first
    np.cumsum(probs, axis=-1, out=cdf[:, 1:])
    edges = _steps(k + 1, start=-0.5)
    out = np.empty((n, 2))
    for i, row in enumerate(cdf):
        out[i] = np.interp(quantiles, row, edges)
    np.maximum(out, 0, out=out)  # np.clip's value, without its Python-level checks (NaN stays NaN)
    return np.minimum(out, k - 1, out=out)


@lru_cache(maxsize=8)
def _quantiles(coverage: float) -> np.ndarray:
    """The two quantiles of a central ``coverage`` interval (read-only)."""
    out = np.array([(1 - coverage) / 2, 1 - (1 - coverage) / 2])
    out.flags.writeable = False
    return out


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


def combine(logits: np.ndarray, reg: np.ndarray, how: str = "dex", probs: np.ndarray | None = None) -> np.ndarray:
    """The reported age: DEX expectation, regression, their mean, or the distribution's median (as the model
    record says). ``probs``: ``softmax(logits)`` in float64 when the caller has it already."""
    if how not in ESTIMATES:
        raise ValueError(f"unknown estimate {how!r}; choose {', '.join(ESTIMATES)}")
    if how == "reg":
        return reg.astype(np.float64)
    if probs is None:
        probs = softmax(logits.astype(np.float64))
    if how == "median":
        return median_age(probs)
    dex = expected_age(probs)
    return dex if how == "dex" else 0.5 * (dex + reg)
