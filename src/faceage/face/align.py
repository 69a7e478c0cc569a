"""Eye-line alignment and cropping: pure numpy/Pillow, no detector here.

:class:`CropSpec` describes the crop; it is stored in every model's weights file so
that inference crops exactly as training did. :func:`align` rotates about the eye
midpoint so the eye line is horizontal, scales so the inter-ocular distance is
``eye_distance`` of the face width, and crops, all as one affine warp
(``Image.transform(..., Image.AFFINE, resample=BILINEAR)``).

Border handling: where the crop reaches past the image edge, the edge pixels are
replicated (no black triangles after rotation). Large down-scalings are first
box-reduced (``Image.reduce``) so the bilinear warp does not alias.

Geometry (``S`` = ``size``, ``F = S / (1 + 2 * margin)`` = the face part of the crop)::

    eye midpoint  -> (S / 2, margin * F + eye_y * F)
    eye distance  -> eye_distance * F
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image

Point = tuple[float, float]


@dataclass(frozen=True)
class CropSpec:
    """How a face crop is made. JSON-plain (``to_dict``/``from_dict``).

    Defaults (112 px, eye distance 0.30, eye line at 0.40, no margin) give a
    crop from just above the forehead to just below the chin, with a little of
    the ears and hair: about the same extent as UTKFace's own aligned 200x200
    crops (measured on them: eye distance ~0.29 of the width, eye line ~0.42
    of the height).
    """

    size: int = 112
    eye_distance: float = 0.34
    eye_y: float = 0.38
    margin: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.size, int) and 8 <= self.size <= 4096):
            raise ValueError(f"CropSpec.size must be an integer in 8..4096, got {self.size!r}")
        if not 0.05 <= float(self.eye_distance) <= 0.9:
            raise ValueError(f"CropSpec.eye_distance must be in 0.05..0.9, got {self.eye_distance!r}")
        if not 0.0 <= float(self.eye_y) <= 1.0:
            raise ValueError(f"CropSpec.eye_y must be in 0..1, got {self.eye_y!r}")
        if not 0.0 <= float(self.margin) <= 2.0:
            raise ValueError(f"CropSpec.margin must be in 0..2, got {self.margin!r}")

    @property
    def face_size(self) -> float:
        """Width of the face part of the crop, in output pixels (``size`` without margins)."""
        return self.size / (1.0 + 2.0 * self.margin)

    def to_dict(self) -> dict:
        return {"size": int(self.size), "eye_distance": float(self.eye_distance),
                "eye_y": float(self.eye_y), "margin": float(self.margin)}

    @classmethod
    def from_dict(cls, data: dict) -> "CropSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"CropSpec: unknown keys {sorted(unknown)}")
        kw = dict(data)
        if "size" in kw:
            kw["size"] = int(kw["size"])
        for k in ("eye_distance", "eye_y", "margin"):
            if k in kw:
                kw[k] = float(kw[k])
        return cls(**kw)


# dlib's 5-point face-chip template (``get_face_chip_details``, unit square): the two corners of each eye
_DLIB_EYES = (((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677)),
              ((0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242)))


def dlib_chip(size: int = 150, padding: float = 0.25) -> CropSpec:
    """The crop of ``dlib.get_face_chip(img, shape, size, padding)`` in eye terms: the template's eye centres
    give the eye distance and eye line, and dlib's padding is this spec's margin. dlib fits all five points
    (with the nose); eyes alone put the chip within about a pixel of it (its template centre is 0.49, not
    0.5, of the width). dlib's face-recognition network was trained on these chips (150 px, padding 0.25)."""
    (a, b), (c, d) = _DLIB_EYES
    right = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    left = ((c[0] + d[0]) / 2, (c[1] + d[1]) / 2)
    return CropSpec(size=size, eye_distance=round(math.dist(left, right), 4),
                    eye_y=round((left[1] + right[1]) / 2, 4), margin=padding)


#: the crop dlib's face-recognition ResNet knows (150 px, padding 0.25)
DLIB_CHIP = dlib_chip()


def eye_angle(eyes: tuple[Point, Point]) -> float:
    """Angle of the line from the image-left to the image-right eye, in degrees
    (image coordinates, y down: positive = the right eye is lower)."""
    (x1, y1), (x2, y2) = eyes
    return math.degrees(math.atan2(y2 - y1, x2 - x1))


def alignment_matrix(eyes: tuple[Point, Point], spec: CropSpec) -> np.ndarray:
    """2x3 matrix mapping input pixel coordinates (x, y) to crop pixel coordinates.

    Pixel-index convention on both sides (pixel ``i`` is centred at ``i``)."""
    (x1, y1), (x2, y2) = eyes
    dx, dy = x2 - x1, y2 - y1
    d = math.hypot(dx, dy)
    if not d > 1e-6:
        raise ValueError("eyes coincide; cannot align")
    F = spec.face_size
    s = spec.eye_distance * F / d
    theta = math.atan2(dy, dx)
    c, sn = math.cos(theta), math.sin(theta)
    mx, my = (x1 + x2) / 2 + 0.5, (y1 + y2) / 2 + 0.5  # continuous coords
    cx, cy = spec.size / 2.0, spec.margin * F + spec.eye_y * F
    # forward: out = s * R(-theta) (in - m) + (cx, cy), continuous coords
    a = np.array([[s * c, s * sn], [-s * sn, s * c]])
    t = np.array([cx, cy]) - a @ np.array([mx, my])
    # index convention: out_i + 0.5 = A (in_i + 0.5) + t
    t = t + a @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([a, t[:, None]])


def _warp(image: np.ndarray, inv: np.ndarray, size: int) -> np.ndarray:
    """Warp with ``inv`` (2x3, output continuous -> input continuous), edge replicate."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3].astype(np.uint8, copy=False))
    h, w = img.shape[:2]
    # scale of the warp (input pixels per output pixel)
    step = math.sqrt(abs(np.linalg.det(inv[:, :2])))
    # where the output square lands in the input
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    pts = corners @ inv.T
    x0, y0 = math.floor(pts[:, 0].min()) - 2, math.floor(pts[:, 1].min()) - 2
    x1, y1 = math.ceil(pts[:, 0].max()) + 2, math.ceil(pts[:, 1].max()) + 2
    # crop the needed region, pad past the image edge by replication
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:  # entirely outside: nearest edge pixel region
        cx0, cx1 = min(max(x0, 0), w - 1), min(max(x0, 0), w - 1) + 1
        cy0, cy1 = min(max(y0, 0), h - 1), min(max(y0, 0), h - 1) + 1
    region = img[cy0:cy1, cx0:cx1]
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
    pad = tuple((max(0, a), max(0, b)) for a, b in pad)
    if any(a or b for a, b in pad[:2]):
        region = np.pad(region, pad, mode="edge")
    src = Image.fromarray(region)
    inv = inv.copy()
    inv[:, 2] -= (x0, y0)
    k = int(step) if step >= 2.0 else 1
    if k > 1:  # box-reduce first so the bilinear warp does not alias
        src = src.reduce(k)
        inv = inv / k
    coeffs = tuple(float(v) for v in inv.reshape(-1))
    out = src.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def align(image: np.ndarray, eyes: tuple[Point, Point], spec: CropSpec = CropSpec()) -> np.ndarray:
    """Rotate about the eye midpoint so the eye line is horizontal, scale and crop.

    ``eyes`` = (image-left eye, image-right eye) in input pixels. Returns a
    ``size x size x 3`` uint8 array; borders beyond the image are edge-replicated."""
    fwd = alignment_matrix(eyes, spec)
    # to continuous coords, invert
    a, t = fwd[:, :2], fwd[:, 2]
    t_c = t + 0.5 - a @ np.array([0.5, 0.5])
    ainv = np.linalg.inv(a)
    inv = np.hstack([ainv, (-ainv @ t_c)[:, None]])
    return _warp(image, inv, spec.size)


def center_crop(image: np.ndarray, spec: CropSpec = CropSpec()) -> np.ndarray:
    """No-face fallback: the central square of side ``min(H, W)``, resized to
    ``size x size`` (no rotation). Suits inputs that are already face crops."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    side = min(h, w)
    step = side / spec.size
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    inv = np.array([[step, 0.0, x0], [0.0, step, y0]])
    return _warp(img, inv, spec.size)


def center_crop_eyes(shape: tuple[int, ...], spec: CropSpec = CropSpec()) -> tuple[Point, Point]:
    """Where :func:`center_crop`'s spec would put the eyes, in input pixels (an estimate
    used for the fallback face)."""
    h, w = shape[:2]
    side = min(h, w)
    step = side / spec.size
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    F = spec.face_size
    ey = spec.margin * F + spec.eye_y * F
    half = spec.eye_distance * F / 2
    def to_in(u, v):
        return (x0 + (u + 0.5) * step - 0.5, y0 + (v + 0.5) * step - 0.5)
    return to_in(spec.size / 2 - half - 0.5, ey - 0.5), to_in(spec.size / 2 + half - 0.5, ey - 0.5)
