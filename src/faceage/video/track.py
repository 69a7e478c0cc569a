"""Following faces from detection to detection: the only module that imports scipy.

A small assignment-based tracker (in the spirit of SORT): each track predicts its
box at the new frame with a constant-velocity model, and detections are matched
to the predictions by the Hungarian algorithm on ``1 - IoU``, pairs below
``min_iou`` being left unmatched. Unmatched detections start tracks; a track
unmatched for more than ``max_gap`` seconds ends (a face hidden for longer gets
a new id). Times, not frame numbers, so variable frame rates move boxes right.

Why not a library: norfair (the maintained pure-Python tracker) pins numpy < 2,
and supervision's ByteTrack pulls in OpenCV; this needs only scipy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[float, float, float, float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), boxes as left, top, right, bottom."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class _State:
    key: int
    box: np.ndarray  # cx, cy, w, h at ``frame``
    velocity: np.ndarray  # per second
    time: float
    hits: int = 1

    def predict(self, time: float) -> np.ndarray:
        cx, cy, w, h = self.box + self.velocity * (time - self.time)
        w, h = max(w, 1.0), max(h, 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _centre_size(box) -> np.ndarray:
    l, t, r, b = (float(v) for v in box)
    return np.array([(l + r) / 2, (t + b) / 2, r - l, b - t])


class Tracker:
    """``update(time, boxes)`` -> one track key per box (new keys for new faces)."""

    def __init__(self, *, max_gap: float = 2.0, min_iou: float = 0.2, smoothing: float = 0.5) -> None:
        self.max_gap, self.min_iou, self.smoothing = float(max_gap), float(min_iou), float(smoothing)
        self._tracks: list[_State] = []
        self._next = 0

    def update(self, time: float, boxes) -> list[int]:
        self._tracks = [t for t in self._tracks if time - t.time <= self.max_gap]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        keys = [-1] * len(boxes)
        if self._tracks and len(boxes):
            pred = np.stack([t.predict(time) for t in self._tracks])
            iou = iou_matrix(pred, boxes)
            rows, cols = linear_sum_assignment(1.0 - iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    keys[c] = self._match(self._tracks[r], time, boxes[c])
        for c, key in enumerate(keys):
            if key < 0:
                keys[c] = self._next
                self._tracks.append(_State(self._next, _centre_size(boxes[c]), np.zeros(4), time))
                self._next += 1
        return keys

    def _match(self, track: _State, time: float, box) -> int:
        new = _centre_size(box)
        step = (new - track.box) / max(time - track.time, 1e-3)
        track.velocity = self.smoothing * track.velocity + (1 - self.smoothing) * step if track.hits > 1 else step
        track.box, track.time, track.hits = new, time, track.hits + 1
        return track.key
