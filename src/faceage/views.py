"""Test-time views of aligned crops: the face as is, mirrored and slightly zoomed, averaged.

The model is trained on flipped and rescaled (0.9-1.1) faces, so scoring a crop in several of
those views and averaging the logits is a cheap ensemble. On the bundled model's UTKFace
validation split: one view 5.33 MAE, ``flip`` 5.17, ``full`` (flip x zoom 1.0, 0.9, 1.1) 5.05,
for 1, 2 and 6 runs of a ~1 ms network (small next to face detection). Pure numpy: the ONNX
path needs no PyTorch.
"""
from __future__ import annotations

import numpy as np

# (zoom, mirrored) per view; zoom < 1 shows the centre larger, > 1 shows more around the face
TTA: dict[str, tuple[tuple[float, bool], ...]] = {
    "none": ((1.0, False),),
    "flip": ((1.0, False), (1.0, True)),
    "full": tuple((zoom, mirror) for zoom in (1.0, 0.9, 1.1) for mirror in (False, True)),
}


def check_tta(tta: str) -> str:
    if tta not in TTA:
        raise ValueError(f"tta must be one of {', '.join(TTA)}, not {tta!r}")
    return tta


def _axis(size: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels and weights along one axis: sampling points scaled about the centre, edges
    repeated (the same geometry as ``grid_sample(align_corners=False, padding_mode="border")``)."""
    u = ((zoom * ((2 * np.arange(size) + 1) / size - 1) + 1) * size - 1) / 2
    u = np.clip(u, 0, size - 1)
    i0 = np.floor(u).astype(np.intp)
    return i0, np.minimum(i0 + 1, size - 1), (u - i0).astype(np.float32)


def zoom(batch: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear zoom of an (N, H, W, 3) uint8 batch about the image centre."""
    if factor == 1.0:
        return batch
    y0, y1, wy = _axis(batch.shape[1], factor)
    x0, x1, wx = _axis(batch.shape[2], factor)
    b = batch.astype(np.float32)
    rows = b[:, y0] * (1 - wy)[None, :, None, None] + b[:, y1] * wy[None, :, None, None]
    out = rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_views(batch: np.ndarray, tta: str) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (V * N, S, S, 3): view after view, each a whole batch."""
    out = []
    for factor, mirror in TTA[check_tta(tta)]:
        v = zoom(batch, factor)
        out.append(v[:, :, ::-1] if mirror else v)
    return np.ascontiguousarray(np.concatenate(out)) if len(out) > 1 else batch


def average_views(logits: np.ndarray, reg: np.ndarray, tta: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean logits and regression over the views made by :func:`make_views`."""
    n_views = len(TTA[tta])
    return (logits.reshape(n_views, -1, logits.shape[-1]).mean(0),
            reg.reshape(n_views, -1).mean(0))
