"""Fusing a track's per-frame age distributions into one age and interval.

Default (``logpool``): a weighted geometric mean of the per-frame distributions,
``log p(age) = sum_t w_t log p_t(age) / sum_t w_t`` (renormalised). An age that
some frame finds very unlikely stays unlikely, so frames agreeing on a narrow
range dominate outliers; dividing by the total weight keeps the fused distribution
as sharp as one frame's (frames of one face are far from independent), so the
calibrated 80% interval keeps its meaning. ``mixture`` (``sum_t w_t p_t``) is the
alternative; with the DEX estimate its age is exactly the weighted mean of the
per-frame ages. The comparison on the test video is in docs/video.md.

Frame weights: ``w = size * quality``. ``size`` = (eye distance / the crop's eye
distance)^2, at most 1: a face smaller than the aligned crop is upsampled and
carries less detail. ``quality`` = detector score / :data:`SCORE_REF`, at most 1:
marginal detections (turned, blurred, half hidden faces) count less.
"""
from __future__ import annotations

import math

import numpy as np

from faceage.core.scoring import Scores

FUSIONS = ("logpool", "mixture")
#: median dlib HOG score of the faces found on every 5th FG-NET photo (196 faces; quartiles 1.17, 1.95)
SCORE_REF = 1.5


def frame_weight(eyes, score: float, crop_eye_px: float) -> float:
    """How much one frame's estimate counts (see the module docstring)."""
    (x1, y1), (x2, y2) = eyes
    size = min(1.0, (math.hypot(x2 - x1, y2 - y1) / crop_eye_px) ** 2)
    quality = min(1.0, max(float(score), 0.0) / SCORE_REF)
    return max(size * quality, 1e-3)


class Fusion:
    """Running weighted fusion of one track's frames: ``add`` per scored frame, ``scores()`` at any time."""

    def __init__(self, method: str = "logpool") -> None:
        if method not in FUSIONS:
            raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
        self.method = method
        self.weight = 0.0
        self._sum: np.ndarray | None = None
        self._reg = 0.0
        self._estimate, self._temperature = "dex", 1.0

    def add(self, scores: Scores, row: int, weight: float) -> None:
        """Add row ``row`` of ``scores`` (one face in one frame) with ``weight``."""
        log_p = scores.logits[row].astype(np.float64)
        log_p = log_p - (log_p.max() + np.log(np.exp(log_p - log_p.max()).sum()))
        term = log_p if self.method == "logpool" else np.exp(log_p)
        self._sum = weight * term if self._sum is None else self._sum + weight * term
        self._reg += weight * float(scores.reg[row])
        self.weight += weight
        self._estimate, self._temperature = scores.estimate, scores.interval_temperature

    def scores(self) -> Scores:
        """The fused distribution as a one-row :class:`~faceage.core.scoring.Scores` (age, interval as per frame)."""
        if self._sum is None:
            raise ValueError("no frame was added")
        mean = self._sum / self.weight
        logits = mean if self.method == "logpool" else np.log(np.clip(mean, 1e-300, None))
        return Scores(logits[None], np.array([self._reg / self.weight]), self._estimate, self._temperature)
