"""The ``dlib`` face detector and eye landmarks: the only module that imports dlib (registered as ``dlib``
in :mod:`faceage.face.detect`; what it returns is plain :class:`~faceage.face.detect.Detection` data).

The ``dlib`` backend (the paper's choice) uses dlib's HOG frontal detector and the
public-domain 5-point shape predictor, shipped (with the MMOD model) in the faceage
package (eye centre = mean of that eye's two corner points). It works on a copy
downscaled once so that its longest side is at most ``max_side`` (2000 px: HOG's
smallest face, about 64 px, is then 3.2% of a large photo's long side, 128 px of a
4000-px photo, which is decoded at 1/2 for it; 2560 makes it 2.5% at about twice the
time), and runs passes from coarse to fine, each
adding the faces the previous ones could not see (duplicates merged by
non-maximum suppression):

0. ``hog-fast``  HOG on a copy just large enough for faces at least ``fast_face``
                 (half) of the shorter side wide, on small working images (below);
1. ``hog``       HOG on the working image (faces from 64-80 px);
2. ``hog-up1``   HOG with one 2x upsampling (faces from 40 px), on small working
                 images (longest side at most ``up1_max_side``, 640 px), or when
                 nothing was found so far on a working image of at most 1000 px.

On a small working image a close-up ends the search early: a single face at least
``close_up`` of the image's shorter side wide (a portrait or a face crop, where the
next pass would cost 4x to look for smaller faces around it). A large working
image always gets pass 1 after pass 0. Faces that dlib's HOG finds at upsample 0
on the working image, and at upsample 1 where pass 2 runs, are thus never lost
(apart from faces next to a close-up). When nothing is found, recovery passes
follow, on a copy at most ``recover_side`` (640 px) long, so that their cost does
not grow with the photo:

3. ``hog-up2``   a second upsampling, only for small images;
4. ``hog-rot+25`` / ``hog-rot-25``: HOG (one upsampling) on copies rotated by
                 +-25 degrees, boxes and eyes mapped back (tilted heads);
5. ``cnn``       dlib's CNN (MMOD) detector, last resort, without upsampling on a
                 copy at most ``cnn_side`` (320 px) long: its time and memory grow
                 with the pixels it sees (22 s and 3 GB on a 2000 x 1500 input), so
                 both are bounded; the faces it recovers are portraits HOG missed,
                 large enough for that copy.

A flat image (no contrast at face scale: a blank frame) skips the recovery passes:
nothing in it can be a face.

No pass ever sees an image too small for it: HOG's window is 80 px, so a pass
runs only where the (scaled, upsampled) shorter side holds one window, and an
image whose shorter side is under 20 px (one window after two upsamplings)
gives ``[]``. This also keeps degenerate shapes (e.g. 8 x 2000 px) away from
dlib's CNN, which corrupts the heap on them.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from faceage.errors import ConfigError
from faceage.face.detect import Box, Detection, Point, as_rgb, scale_detections


#: dlib's model files, shipped in the package (public domain, from dlib-models; see MODEL_LICENSE)
DLIB_MODELS = Path(__file__).resolve().parent / "dlib_models"


def dlib_model_path(name: str) -> str:
    """The shipped dlib model file ``name`` (dlib takes a str path)."""
    path = DLIB_MODELS / name
    if not path.is_file():
        from faceage.errors import WeightsError

        raise WeightsError(f"dlib's model file {path} is missing; reinstall faceage")
    return str(path)


class _DlibModels:
    """dlib models, loaded once and lazily; one lock serialises dlib calls
    (the Python bindings hold the GIL anyway)."""

    _lock = threading.RLock()
    _hog = None
    _shape = None
    _cnn = None

    @classmethod
    def hog_and_shape(cls):
        with cls._lock:
            if cls._hog is None:
                import dlib

                cls._shape = dlib.shape_predictor(dlib_model_path("shape_predictor_5_face_landmarks.dat"))
                cls._hog = dlib.get_frontal_face_detector()
            return cls._hog, cls._shape

    @classmethod
    def cnn(cls):
        with cls._lock:
            if cls._cnn is None:
                import dlib

                cls._cnn = dlib.cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))
            return cls._cnn


def _rotation(size: tuple[int, int], degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine 2x3 matrix mapping rotated-image (expand=True) pixel coords back to the
    original image, and the rotated image's size. Matches PIL ``rotate(expand=True)``."""
    w, h = size
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # PIL rotates counter-clockwise (on screen) for positive angles.
    nw = int(math.ceil(abs(w * c) + abs(h * s) - 1e-9))
    nh = int(math.ceil(abs(w * s) + abs(h * c) - 1e-9))
    # rotated (u, v) -> original (x, y), in continuous pixel coords about the centres
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    m[0, 2] = w / 2 - (c * nw / 2 - s * nh / 2)
    m[1, 2] = h / 2 - (s * nw / 2 + c * nh / 2)
    return m, (nw, nh)


def _iou(a: Box, b: Box) -> float:
    l, t = max(a[0], b[0]), max(a[1], b[1])
    r, btm = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, r - l) * max(0, btm - t)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _nms(dets: list[Detection], thresh: float = 0.3) -> list[Detection]:
    keep: list[Detection] = []
    for d in sorted(dets, key=lambda d: d.score, reverse=True):
        if all(_iou(d.box, k.box) < thresh for k in keep):
            keep.append(d)
    return keep


#: dlib's HOG frontal detector scans an 80 x 80 px window: no face smaller is found.
HOG_WINDOW = 80
#: The shortest side any pass can use: one window after two 2x upsamplings.
MIN_SIDE = HOG_WINDOW // 4
#: The narrowest face box dlib's HOG finds without upsampling (64-80 px; measured on the
#: test photos' faces scaled down): 3.2% of the long side at ``max_side`` = 2000, 2.5% at 2560.
HOG_MIN_FACE = 64
#: Working images up to this long side get the upsampled HOG pass when nothing was found
#: (the working size before ``max_side`` grew; above it, pass 1 already sees such faces).
UP1_RECOVER_MAX_SIDE = 1000
#: A recovery copy whose grey levels spread over less than this, once averaged to
#: ``FLAT_THUMB`` px, is flat: nothing in it can be a face.
FLAT_SPREAD = 6.0
FLAT_THUMB = 64


class DlibDetector:
    """HOG + 5-point landmarks, coarse-to-fine passes and a recovery path (see the module docstring).

    Options: ``fast_face`` (the quick first pass looks for faces at least this fraction
    of the shorter side wide; 0 turns it off),
    ``max_side`` (detect on a copy downscaled to this longest side; 0: full size;
    faces narrower than ``HOG_MIN_FACE / max_side`` of a larger photo's long side are not looked for),
    ``close_up`` (on a small image, a single face at least this fraction of the shorter
    side wide ends the search; 0: never), ``up1_max_side`` (images with a longest side
    up to this are small: passes 0 and 2 run on them), ``recover`` (run passes 3-5 when
    nothing is found), ``rotations`` (degrees tried in pass 4), ``cnn`` (allow pass 5),
    ``up2_max_side`` (pass 3 only when the working image's longest side is at most
    this), ``hog_threshold`` (dlib's detection threshold adjustment),
    ``recover_side`` (passes 3-5 run on a copy at most this long), ``cnn_side`` (the
    CNN sees a copy at most this long, without upsampling: its time and memory bound).
    """

    def __init__(
        self,
        fast_face: float = 0.6,
        max_side: int = 2000,
        close_up: float = 0.4,
        up1_max_side: int = 640,
        recover: bool = True,
        rotations: tuple[float, ...] = (25.0, -25.0),
        cnn: bool = True,
        up2_max_side: int = 700,
        hog_threshold: float = 0.0,
        recover_side: int = 640,
        cnn_side: int = 320,
    ):
        self.fast_face = float(fast_face)
        self.max_side = int(max_side)
        self.close_up = float(close_up)
        self.up1_max_side = int(up1_max_side)
        self.recover = bool(recover)
        self.rotations = tuple(float(r) for r in rotations)
        self.use_cnn = bool(cnn)
        self.up2_max_side = int(up2_max_side)
        self.hog_threshold = float(hog_threshold)
        self.recover_side = int(recover_side)
        self.cnn_side = int(cnn_side)
        if self.recover_side < HOG_WINDOW or self.cnn_side < HOG_WINDOW:
            raise ConfigError(f"recover_side and cnn_side must be at least {HOG_WINDOW} (one HOG window), "
                             f"got {self.recover_side} and {self.cnn_side}")

    # -- single passes on a working (RGB uint8) image; return detections in its coords
    def _hog(self, img: np.ndarray, upsample: int, name: str, scale: float = 1.0) -> list[Detection]:
        """HOG on ``img`` resized by ``scale``; boxes and landmarks in ``img``'s own pixels.
        Nothing (and no dlib call) when the scaled, upsampled image cannot hold one window."""
        import dlib

        h, w = img.shape[:2]
        if round(min(h, w) * scale) * 2 ** upsample < HOG_WINDOW:
            return []
        hog, shape_pred = _DlibModels.hog_and_shape()
        work = _scaled(img, scale) if scale != 1.0 else img
        with _DlibModels._lock:
            rects, scores, _ = hog.run(work, upsample, self.hog_threshold)
            out = []
            for rect, score in zip(rects, scores):
                if scale != 1.0:
                    rect = dlib.rectangle(*(round(v / scale) for v in (rect.left(), rect.top(), rect.right(),
                                                                       rect.bottom())))
                eyes = landmark_eyes(img, rect, shape_pred)
                out.append(Detection((rect.left(), rect.top(), rect.right(), rect.bottom()), eyes, float(score), name))
        return out

    def _cnn(self, img: np.ndarray) -> list[Detection]:
        """dlib's MMOD CNN on a copy of ``img`` at most ``cnn_side`` long, without upsampling
        (its time and memory grow with its input: 3 GB at 2000 x 1500); boxes mapped back,
        landmarks on ``img`` itself. Only where the shorter side holds a window (it
        corrupts the heap on slivers such as 8 x 2000 px)."""
        import dlib

        small = _shrunk(img, self.cnn_side)
        if min(small.shape[:2]) < HOG_WINDOW:
            return []
        k = img.shape[1] / small.shape[1]
        cnn = _DlibModels.cnn()
        _, shape_pred = _DlibModels.hog_and_shape()
        with _DlibModels._lock:
            found = cnn(small, 0)
            out = []
            for d in found:
                r = d.rect
                rect = dlib.rectangle(*(round(v * k) for v in (r.left(), r.top(), r.right(), r.bottom())))
                eyes = landmark_eyes(img, rect, shape_pred)
                out.append(Detection((rect.left(), rect.top(), rect.right(), rect.bottom()), eyes,
                                     float(d.confidence), "cnn"))
        return out

    def _rotated(self, img: np.ndarray, degrees: float) -> list[Detection]:
        pil = Image.fromarray(img)
        rot = np.asarray(pil.rotate(degrees, resample=Image.BILINEAR, expand=True, fillcolor=(127, 127, 127)))
        m, _ = _rotation(pil.size, degrees)

        def back(x: float, y: float) -> Point:
            # pixel-index coords -> continuous (+0.5), map, back to index (-0.5)
            u, v = x + 0.5, y + 0.5
            return (m[0, 0] * u + m[0, 1] * v + m[0, 2] - 0.5, m[1, 0] * u + m[1, 1] * v + m[1, 2] - 0.5)

        tag = f"hog-rot{degrees:+g}"
        out = []
        for d in self._hog(np.ascontiguousarray(rot), 1, tag):
            l, t, r, b = d.box
            corners = [back(l, t), back(r, t), back(l, b), back(r, b)]
            xs, ys = [c[0] for c in corners], [c[1] for c in corners]
            # the axis-aligned hull of a rotated box is too big; shrink it to the same area
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            half = max(r - l, b - t) / 2
            box = (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))
            e = [back(*p) for p in d.eyes]
            eyes = (e[0], e[1]) if e[0][0] <= e[1][0] else (e[1], e[0])
            out.append(Detection(box, eyes, d.score, tag))
        return out

    def _close_up(self, found: list[Detection], short: int) -> bool:
        return len(found) == 1 and self.close_up > 0 and found[0].box[2] - found[0].box[0] >= self.close_up * short

    def _passes(self, img: np.ndarray) -> list[Detection]:
        h, w = img.shape[:2]
        long, short = max(h, w), min(h, w)
        # On a small image a close-up ends the search: the upsampled pass would cost 4x
        # to look for small faces around a portrait. A large one always gets pass 1,
        # which finds whatever pass 0 would, so pass 0 runs only on small ones.
        small = long <= self.up1_max_side
        found: list[Detection] = []
        fast = HOG_WINDOW / (self.fast_face * short) if self.fast_face > 0 else 1.0
        if small and fast <= 0.85:  # worth a pass of its own
            found = self._hog(img, 0, "hog-fast", scale=fast)
            if self._close_up(found, short):
                return found
        found = _nms(found + self._hog(img, 0, "hog"))
        if (small and not self._close_up(found, short)) or (not found and self.recover
                                                            and long <= UP1_RECOVER_MAX_SIDE):
            found = _nms(found + self._hog(img, 1, "hog-up1"))
        if found or not self.recover:
            return found
        if self.max_side and long > self.max_side:  # a sliver kept long (see detect): no slow passes
            return []
        rec = _shrunk(img, self.recover_side)  # the recovery passes' cost does not grow with the photo
        if _flat(rec):
            return []
        found = self._recover(rec, up2=long <= self.up2_max_side)
        if found and rec is not img:
            found = scale_detections(found, w / rec.shape[1], h / rec.shape[0])
        return found

    def _recover(self, img: np.ndarray, up2: bool) -> list[Detection]:
        """Passes 3-5 on a (bounded) image where passes 0-2 found nothing; ``up2``: a small
        working image, worth a second upsampling."""
        if up2:
            found = self._hog(img, 2, "hog-up2")
            if found:
                return found
        found = []
        for deg in self.rotations:
            found += self._rotated(img, deg)
        if found:
            return _nms(found)
        return self._cnn(img) if self.use_cnn else []

    def detect(self, image: np.ndarray) -> list[Detection]:
        if (prepared := working_image(image, self.max_side)) is None:
            return []
        img, work = prepared
        h, w = img.shape[:2]
        dets = self._passes(work)
        if work is not img:
            dets = scale_detections(dets, w / work.shape[1], h / work.shape[0])
        return sorted(dets, key=lambda d: d.area, reverse=True)


def landmark_eyes(img: np.ndarray, rect, shape_pred) -> tuple[Point, Point]:
    """The two eye centres (image-left first) from dlib's 5-point shape predictor on ``rect``:
    each the mean of that eye's two corner points, the eyes every age model was trained on."""
    shp = shape_pred(img, rect)
    pts = [(shp.part(i).x, shp.part(i).y) for i in range(shp.num_parts)]
    e1 = ((pts[0][0] + pts[1][0]) / 2.0, (pts[0][1] + pts[1][1]) / 2.0)
    e2 = ((pts[2][0] + pts[3][0]) / 2.0, (pts[2][1] + pts[3][1]) / 2.0)
    return (e1, e2) if e1[0] <= e2[0] else (e2, e1)


def eyes_in_box(img: np.ndarray, box: Box) -> tuple[Point, Point]:
    """dlib's 5-point eyes (:func:`landmark_eyes`) of the face in ``box`` (left, top, right, bottom) of ``img``."""
    import dlib

    _, shape_pred = _DlibModels.hog_and_shape()
    with _DlibModels._lock:
        return landmark_eyes(img, dlib.rectangle(*(int(round(v)) for v in box)), shape_pred)


def hog_faces(img: np.ndarray, threshold: float = 0.0) -> list[tuple[Box, float]]:
    """dlib's HOG frontal detector once on ``img`` (HxWx3 uint8), no upsampling: its boxes and scores.
    (dlib reads the rows as contiguous memory: a view into a wider image is copied first.)"""
    hog, _ = _DlibModels.hog_and_shape()
    with _DlibModels._lock:
        rects, scores, _ = hog.run(np.ascontiguousarray(img), 0, threshold)
    return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


def working_copy(img: np.ndarray, max_side: int, min_short: int = HOG_WINDOW) -> np.ndarray:
    """``img`` downscaled once so that its longest side is at most ``max_side`` (0: never), but
    never so far that its shorter side drops under ``min_short`` (thin images keep a window across)."""
    h, w = img.shape[:2]
    scale = min(1.0, max(max_side / max(h, w), min_short / min(h, w))) if max_side else 1.0
    if scale >= 1.0:
        return img
    return _scaled(img, scale)


def _scaled(img: np.ndarray, scale: float) -> np.ndarray:
    """``img`` resized by ``scale`` (bilinear; a large reduction box-reduced first, Pillow's ``reducing_gap``)."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BILINEAR,
                                                  reducing_gap=2.0))


def working_image(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A detector's input as RGB (:func:`as_rgb`) and its working copy (:func:`working_copy`), or None
    when its shorter side is under :data:`MIN_SIDE`: too thin for any pass."""
    img = as_rgb(image)
    if min(img.shape[:2]) < MIN_SIDE:
        return None
    return img, working_copy(img, max_side)


def _shrunk(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` downscaled (area-averaged) so that its longest side is at most ``side``; itself when it is."""
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    k = side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * k)), max(1, round(h * k))), Image.BOX))


def _flat(img: np.ndarray) -> bool:
    """No contrast at face scale: averaged to ``FLAT_THUMB`` px, its grey levels spread over
    less than ``FLAT_SPREAD`` (a blank frame; not noise, whose average keeps some spread)."""
    thumb = np.asarray(Image.fromarray(_shrunk(img, FLAT_THUMB)).convert("L"), dtype=np.float32)
    return float(thumb.max() - thumb.min()) < FLAT_SPREAD
