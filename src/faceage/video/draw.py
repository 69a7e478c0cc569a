"""Boxes, track ids and fused ages drawn on video frames."""
from __future__ import annotations

import numpy as np
from PIL import Image

from faceage.annotate import draw_label, pen

#: one colour per track id (cycled), distinct on skin and typical backgrounds
PALETTE = ((40, 220, 90), (255, 170, 0), (80, 180, 255), (255, 90, 200), (250, 240, 80), (170, 120, 255))


def draw_tracks(image: np.ndarray, faces) -> np.ndarray:
    """A copy of the RGB frame with each :class:`~faceage.video.pipeline.TrackedFace` as
    ``#id age (lo-hi)`` (the track's fused age so far)."""
    img = Image.fromarray(image)
    draw, width, font = pen(img)
    for f in faces:
        lo, hi = f.age_interval
        draw_label(draw, f.box, f"#{f.track} {f.age:.0f} ({lo:.0f}-{hi:.0f})", PALETTE[(f.track - 1) % len(PALETTE)],
                   width, font)
    return np.asarray(img)
