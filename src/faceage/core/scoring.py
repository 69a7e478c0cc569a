"""The one scoring path: network-input crops -> test-time views -> backend -> ages.

Training validation, every experiment, ``evaluate``, ``compare``, ``predict`` and ``serve``
score through :func:`score`, so a number in a report and an age from ``predict`` come from
the same views, the same view averaging and the same age estimate.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from faceage.core.ages import age_interval, combine, softmax
from faceage.errors import ModelOutputError
from faceage.core.views import average_views, make_views


@dataclass
class Scores:
    """Per-crop outputs, views averaged, the record's logit bias added."""

    logits: np.ndarray  # (N, 101)
    reg: np.ndarray  # (N,)
    estimate: str  # how ``age`` is made from them (the model record's estimate)
    interval_temperature: float = 1.0

    # computed on first use (idempotent, so threads need no lock); replace() starts them afresh
    _finite: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _probs: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def finite(self) -> np.ndarray:
        """(N,) bool: rows whose outputs are all finite. A NaN or infinite output (damaged weights, or
        a model that overflows on some inputs) has no age: callers report that row as a
        :data:`BAD_OUTPUT` error (:func:`bad_output_message`), never as an age."""
        if self._finite is None:
            finite = np.isfinite(self.logits).all(axis=1) & np.isfinite(self.reg)
            finite.flags.writeable = False
            self._finite = finite
        return self._finite

    def _errors_ignored(self):
        """Non-finite rows must stay NaN without warnings (see ``finite``); finite outputs raise none, so
        numpy's error state is switched only when needed (the switch costs more than the softmax)."""
        return nullcontext() if self.finite.all() else np.errstate(invalid="ignore", over="ignore")

    @property
    def age(self) -> np.ndarray:
        return self.ages(self.estimate)

    def ages(self, how: str) -> np.ndarray:
        with self._errors_ignored():
            return combine(self.logits, self.reg, how, self.probs)

    @property
    def probs(self) -> np.ndarray:
        """The predicted age distribution (ages 0..100); computed once (read-only), the ages use it too."""
        if self._probs is None:
            with self._errors_ignored():
                probs = softmax(self.logits.astype(np.float64))
            probs.flags.writeable = False
            self._probs = probs
        return self._probs

    def interval(self, coverage: float = 0.8) -> np.ndarray:
        """(N, 2) central interval, from the distribution sharpened or widened by the record's
        calibrated temperature (so that about ``coverage`` of true ages fall inside)."""
        with self._errors_ignored():
            return age_interval(softmax(self.logits.astype(np.float64) / self.interval_temperature), coverage)


#: the error code of a face whose model outputs are NaN or infinite (a per-face error everywhere:
#: FaceAge.error, batch rows, the server's answers, video tracks)
BAD_OUTPUT = ModelOutputError.code


def bad_output_message(model: str) -> str:
    """The per-face message for a non-finite output of ``model`` (see :attr:`Scores.finite`)."""
    return (f"the model {model} gave NaN or infinite outputs for this face, so it has no age; its weights are "
            "damaged or it overflows on this input: use another model or re-export it from a good checkpoint")


@lru_cache(maxsize=8)
def _as_array(values: tuple[float, ...]) -> np.ndarray:
    """A record's logit bias as float32, converted once per model, not once per face."""
    out = np.asarray(values, np.float32)
    out.flags.writeable = False
    return out


def score(backend, crops: np.ndarray, tta: str, *, batch_size: int = 256) -> Scores:
    """Score (N, S, S, 3) uint8 network-input crops (see :mod:`faceage.core.preprocess`) in batches."""
    record = backend.record
    logits, reg = [np.zeros((0, record.num_classes), np.float32)], [np.zeros(0, np.float32)]
    for i in range(0, len(crops), batch_size):
        batch = np.ascontiguousarray(crops[i : i + batch_size])
        lg, rg = backend.run(make_views(batch, tta))
        lg, rg = average_views(lg, rg, tta)
        logits.append(lg)
        reg.append(rg)
    # the empty first parts keep an empty input well-formed; one batch needs no concatenation
    logits, reg = (parts[1] if len(parts) == 2 else np.concatenate(parts) for parts in (logits, reg))
    if record.logit_bias is not None:  # the record's prior correction (faceage.data.sets.prior_correction)
        logits = logits + _as_array(tuple(record.logit_bias))
    return Scores(logits, reg, record.estimate, float(record.interval_temperature))


def interval_coverage(iv: np.ndarray, ages: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Share of true ages inside their (N, 2) intervals ``iv`` (:meth:`Scores.interval`), of ``rows`` if given."""
    rows = np.ones(len(ages), bool) if rows is None else rows
    inside = (ages >= iv[:, 0]) & (ages <= iv[:, 1])
    return round(float(inside[rows].mean()), 4)


def calibrate_interval(scores: Scores, ages: np.ndarray, coverage: float = 0.8) -> float:
    """The softmax temperature whose ``coverage`` interval holds that share of ``ages`` (grid search)."""
    best, best_gap = 1.0, float("inf")
    for t in np.round(np.arange(0.5, 4.001, 0.05), 3):
        trial = replace(scores, interval_temperature=float(t))
        gap = abs(interval_coverage(trial.interval(coverage), ages) - coverage)
        if gap < best_gap - 1e-9:
            best, best_gap = float(t), gap
    return best
