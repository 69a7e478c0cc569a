"""The ``mtcnn`` face detector: MTCNN's three small networks on ONNX Runtime, eyes from dlib's 5 points.

MTCNN (Zhang et al., 2016) proposes faces with a 12-px fully convolutional net (P-Net)
over an image pyramid, then refines the proposals with a 24-px (R-Net) and a 48-px net
(O-Net). Its 12-px window is what makes it fast where dlib's HOG (80-px window) is slow:
to see faces 2% of a 12-megapixel photo's long side, HOG needs the photo at full
resolution, MTCNN a 1000-px copy. The weights (MIT, facenet-pytorch) ship in the package
as ONNX files (``scripts/mtcnn_onnx.py`` builds them; ``mtcnn_models/NOTICE``).

The age models were trained on crops aligned on the eyes of dlib's 5-point shape
predictor on dlib's HOG boxes (eye centre = mean of the eye's two corners); MTCNN's own eye
points are another definition of the eye centre. So each MTCNN face is given dlib's HOG box,
found by HOG on the face's region alone (:func:`_hog_box`), or where HOG finds none there and
MTCNN is at least ``confirm`` sure, a box placed from MTCNN's (:data:`HOG_BOX`); the eyes are
that shape predictor's on that box, on the full-resolution image. Small working images (up to
``small_side``: face crops, portraits) go to the ``dlib`` detector as they are, where its quick
close-up pass is as fast; so does a large one where MTCNN finds nothing (recovery passes included).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from faceage.errors import ConfigError, WeightsError
from faceage.face.detect import Box, Detection, Point, scale_detections
from faceage.face.dlib_detector import HOG_MIN_FACE, HOG_WINDOW, eyes_in_box, hog_faces, working_image

MODELS = Path(__file__).resolve().parent / "mtcnn_models"

#: P-Net's window: the smallest face it sees at one pyramid level (px).
CELL = 12
#: dlib's HOG box from MTCNN's, as (centre x, centre y, side) in units of MTCNN's box side: the median
#: over FG-NET and AAF faces both found (``python -m benchmarks.eye_agreement --fit``).
HOG_BOX = (0.013, 0.066, 0.818)


def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap over union, or over the smaller box)."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        over = inter / np.minimum(area[i], area[rest]) if by_min else inter / (area[i] + area[rest] - inter)
        order = rest[over <= thresh]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by the nets' offsets (fractions of the box's width and height)."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2] + 1, 2)
    return boxes + reg * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box made square about its centre, on its longer side."""
    side = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1)
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    return np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)


def _normalised(a: np.ndarray) -> np.ndarray:
    """NHWC pixels (0..255, uint8 or float) -> contiguous float32 NCHW in [-1, 1), as MTCNN was trained."""
    return np.ascontiguousarray(((a.astype(np.float32, copy=False) - 127.5) * 0.0078125).transpose(0, 3, 1, 2))


#: dlib's HOG is asked for its own box of each MTCNN face, on the face's region, at this detection threshold
#: (a little below HOG's own 0); faces wider than this many px are looked for on a downscaled region
HOG_THRESHOLD = -0.5
HOG_MAX_SIDE = 240

#: candidates scored per network call: bounds the memory of a photo full of face-like texture
CHUNK = 256


def _patches(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box sampled (bilinear, edge pixels repeated outside the image) at ``size`` x ``size``
    points, all boxes at once: float32 NCHW, normalised as the nets expect."""
    h, w = img.shape[:2]
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    x1, y1, x2, y2 = (boxes[:, i:i + 1].astype(np.float32) for i in range(4))
    xs = np.clip(x1 + t * (x2 - x1 + 1) - 0.5, 0, w - 1)  # n x size
    ys = np.clip(y1 + t * (y2 - y1 + 1) - 0.5, 0, h - 1)
    x0 = np.minimum(xs.astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(ys.astype(np.int64), max(h - 2, 0))
    fx, fy = (xs - x0.astype(np.float32))[:, None, :, None], (ys - y0.astype(np.float32))[:, :, None, None]
    flat = img.reshape(-1, 3)
    at = (y0 * w)[:, :, None] + x0[:, None, :]  # n x size x size
    dx, dy = int(w > 1), w * int(h > 1)

    def pix(offset: int) -> np.ndarray:
        return np.take(flat, at + offset, axis=0).astype(np.float32)

    top = pix(0) * (1 - fx) + pix(dx) * fx
    out = top * (1 - fy) + (pix(dy) * (1 - fx) + pix(dy + dx) * fx) * fy  # n x size x size x 3
    return _normalised(out)


def _run_chunked(session, img: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray]:
    """A refinement net's outputs for every box, ``CHUNK`` patches per call."""
    parts = [session.run(None, {"image": _patches(img, boxes[i:i + CHUNK], size)})
             for i in range(0, len(boxes), CHUNK)]
    return [np.concatenate(p) for p in zip(*parts)]


def _hog_box(img: np.ndarray, box: Box) -> tuple[Box, float] | None:
    """dlib's HOG box and score of the face at ``box`` (a HOG-like box), or None when HOG finds none there:
    HOG runs on the box's surroundings (twice its size), at a lowered threshold; of its faces, the one
    nearest the box's centre that contains it."""
    side = max(box[2] - box[0], 1)
    # at the image's own scale where HOG sees the face there (then its box is the one dlib's own passes
    # would give), upsampled 2x below that, downscaled for large faces (HOG's cost grows with the region)
    k = 2.0 if side < HOG_MIN_FACE else 1.0 if side <= HOG_MAX_SIDE else HOG_MAX_SIDE / side
    l, t = max(0, round(box[0] - side / 2)), max(0, round(box[1] - side / 2))
    r, b = min(img.shape[1], round(box[2] + side / 2)), min(img.shape[0], round(box[3] + side / 2))
    size = (round((r - l) * k), round((b - t) * k))
    if min(size) < HOG_WINDOW:
        return None
    region = img[t:b, l:r] if k == 1.0 else np.asarray(Image.fromarray(img[t:b, l:r]).resize(size, Image.BILINEAR))
    cx, cy = ((box[0] + box[2]) / 2 - l) * k, ((box[1] + box[3]) / 2 - t) * k
    inside = [(q, score) for q, score in hog_faces(region, HOG_THRESHOLD)
              if q[0] <= cx <= q[2] and q[1] <= cy <= q[3]]
    if not inside:
        return None
    q, score = min(inside, key=lambda f: ((f[0][0] + f[0][2]) / 2 - cx) ** 2 + ((f[0][1] + f[0][3]) / 2 - cy) ** 2)
    return (round(q[0] / k + l), round(q[1] / k + t), round(q[2] / k + l), round(q[3] / k + t)), score


class _Nets:
    """The three ONNX Runtime sessions, built once per process, one thread each."""

    _lock = threading.Lock()
    _sessions: dict | None = None

    @classmethod
    def get(cls) -> dict:
        with cls._lock:
            if cls._sessions is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.enable_mem_pattern = False  # every call has a new shape: planning memory for each costs more
                sessions = {}
                for name in ("pnet", "rnet", "onet"):
                    path = MODELS / f"{name}.onnx"
                    if not path.is_file():
                        raise WeightsError(f"MTCNN's model file {path} is missing; reinstall faceage")
                    sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                cls._sessions = sessions
            return cls._sessions


@dataclass(eq=False)
class MtcnnDetector:
    """MTCNN's faces with dlib's boxes and eyes on large photos, dlib's passes on small ones (see the module
    docstring).

    Options: ``max_side`` (detect on a copy downscaled to this longest side; 0: full size),
    ``min_face`` (the narrowest face looked for, as a fraction of the working image's long side;
    never under 2 P-Net windows), ``small_side`` (working images up to this long go to dlib's passes;
    0: MTCNN everywhere), ``thresholds`` (P-, R- and O-Net's face probability), ``confirm`` (a face
    HOG does not find on its region is kept only if MTCNN is this sure), ``factor`` (pyramid step),
    ``recover`` (where MTCNN finds nothing, dlib's passes, recovery included), ``cnn`` (dlib's
    MMOD pass among them) and ``fast_face`` (dlib's quick close-up pass; None: dlib's default).
    """

    max_side: int = 1000
    min_face: float = 0.024
    small_side: int = 640
    thresholds: tuple[float, ...] = (0.6, 0.7, 0.7)
    confirm: float = 0.99
    factor: float = 0.709
    recover: bool = True
    cnn: bool = True
    fast_face: float | None = None

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(t) for t in self.thresholds)
        if len(self.thresholds) != 3 or not all(0 < t < 1 for t in self.thresholds):
            raise ConfigError(f"mtcnn thresholds must be three probabilities in (0, 1), got {self.thresholds}")
        if not 0.3 <= self.factor <= 0.9:
            raise ConfigError(f"mtcnn factor must be in [0.3, 0.9], got {self.factor}")
        if self.max_side and self.max_side < 4 * CELL:
            raise ConfigError(f"mtcnn max_side must be 0 or at least {4 * CELL}, got {self.max_side}")
        if not 0 < self.min_face < 1 or not 0 <= self.confirm <= 1 or self.small_side < 0:
            raise ConfigError(f"mtcnn min_face must be in (0, 1), confirm in [0, 1] and small_side at least 0, "
                              f"got {self.min_face}, {self.confirm}, {self.small_side}")

    # -- the three stages, on a uint8 RGB working image; boxes (x1, y1, x2, y2) in its pixels
    def _propose(self, img: np.ndarray, nets: dict, smallest: float) -> np.ndarray:
        """P-Net over the pyramid that sees faces from ``smallest`` px up."""
        h, w = img.shape[:2]
        scale = CELL / max(CELL, smallest)
        pil = Image.fromarray(img)
        found = []
        while min(h, w) * scale >= CELL:
            sw, sh = math.ceil(w * scale), math.ceil(h * scale)
            level = np.asarray(pil.resize((sw, sh), Image.BILINEAR, reducing_gap=2.0))
            prob, reg = nets["pnet"].run(None, {"image": _normalised(level[None])})
            ys, xs = np.nonzero(prob[0] >= self.thresholds[0])
            if ys.size:
                score = prob[0, ys, xs]
                boxes = np.stack([(2 * xs + 1) / scale, (2 * ys + 1) / scale, (2 * xs + CELL) / scale,
                                  (2 * ys + CELL) / scale], axis=1).astype(np.float64)
                boxes = np.floor(boxes)
                offsets = reg[0][:, ys, xs].T
                keep = _nms(boxes, score, 0.5)
                found.append(np.concatenate([boxes[keep], score[keep, None], offsets[keep]], axis=1))
            scale *= self.factor
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        cand = cand[_nms(cand[:, :4], cand[:, 4], 0.7)]
        return np.concatenate([_square(_regress(cand[:, :4], cand[:, 5:9])), cand[:, 4:5]], axis=1)

    def _refine(self, img: np.ndarray, boxes: np.ndarray, nets: dict) -> np.ndarray:
        if not len(boxes):
            return boxes
        prob, reg = _run_chunked(nets["rnet"], img, boxes, 24)
        ok = prob >= self.thresholds[1]
        boxes, prob, reg = boxes[ok], prob[ok], reg[ok]
        keep = _nms(boxes[:, :4], prob, 0.7)
        return np.concatenate([_square(_regress(boxes[keep, :4], reg[keep])), prob[keep, None]], axis=1)

    def _output(self, img: np.ndarray, boxes: np.ndarray, nets: dict) -> tuple[np.ndarray, np.ndarray]:
        if not len(boxes):
            return boxes, np.zeros((0, 5, 2))
        prob, reg, marks = _run_chunked(nets["onet"], img, boxes, 48)
        ok = prob >= self.thresholds[2]
        boxes, prob, reg, marks = boxes[ok], prob[ok], reg[ok], marks[ok]
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        points = np.stack([boxes[:, 0:1] + wh[:, 0:1] * marks[:, 0:5], boxes[:, 1:2] + wh[:, 1:2] * marks[:, 5:10]],
                          axis=2)
        boxes = np.concatenate([_regress(boxes[:, :4], reg), prob[:, None]], axis=1)
        keep = _nms(boxes[:, :4], boxes[:, 4], 0.7, by_min=True)
        return boxes[keep], points[keep]

    def mtcnn(self, img: np.ndarray, smallest: float = CELL) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN alone on a uint8 RGB image, faces from ``smallest`` px up: boxes (n x 5: x1, y1, x2,
        y2, probability) and MTCNN's own five points (n x 5 x 2: eyes, nose, mouth corners)."""
        nets = _Nets.get()
        boxes = self._refine(img, self._propose(img, nets, smallest), nets)
        return self._output(img, boxes, nets)

    def _boxes(self, img: np.ndarray) -> list[tuple[Box, float]]:
        """MTCNN's faces on the working image, each with dlib's HOG box and score where HOG finds it on the
        face's region (the box dlib's shape predictor was trained on; the score every consumer of ``dlib``'s
        knows, e.g. video's frame weights), else a HOG-like box placed from MTCNN's (:data:`HOG_BOX`) with
        score 0 (HOG's threshold: a marginal face) if MTCNN is at least ``confirm`` sure."""
        h, w = img.shape[:2]
        boxes, _ = self.mtcnn(img, max(2 * CELL, self.min_face * max(h, w)))
        dx, dy, ds = HOG_BOX
        out = []
        for x1, y1, x2, y2, p in boxes:
            side = max(x2 - x1, y2 - y1)
            cx, cy, s = (x1 + x2) / 2 + dx * side, (y1 + y2) / 2 + dy * side, ds * side
            placed = (round(cx - s / 2), round(cy - s / 2), round(cx + s / 2), round(cy + s / 2))
            found = _hog_box(img, placed)
            if found is not None:
                out.append(found)
            elif p >= self.confirm:
                out.append((placed, 0.0))
        return out

    def landmarks(self, image: np.ndarray, box: Box) -> tuple[Point, Point]:
        """The eyes of the face in ``box`` (a HOG-like box in ``image``'s pixels): dlib's 5 points.
        The face pipeline calls this again on a sharper decode than detection saw."""
        return eyes_in_box(image, box)

    def warm_up(self) -> None:
        """Load the networks now (a server does at start), not on the first large photo."""
        _Nets.get()

    @cached_property
    def _dlib(self):
        """The ``dlib`` detector this one hands small images and MTCNN's misses to (on its working image)."""
        from faceage.face.detect import get_detector

        # its max_side keeps a sliver kept long (see working_copy) away from the slow passes, as dlib's own does
        passes = {} if self.fast_face is None else {"fast_face": self.fast_face}
        return get_detector("dlib", max_side=self.max_side, recover=self.recover, cnn=self.cnn, **passes)

    def detect(self, image: np.ndarray) -> list[Detection]:
        if (prepared := working_image(image, self.max_side)) is None:
            return []
        img, work = prepared
        h, w = img.shape[:2]
        small = max(work.shape[:2]) <= self.small_side
        if not small:  # boxes found on the working image, eyes landmarked on the image itself
            kx, ky = w / work.shape[1], h / work.shape[0]
            dets = []
            for (l, t, r, b), p in self._boxes(work):
                box = (round(l * kx), round(t * ky), round(r * kx), round(b * ky))
                dets.append(Detection(box, self.landmarks(img, box), p, "mtcnn"))
        if small or (not dets and self.recover):  # small: dlib's close-up pass is as fast, and the paper's
            dets = scale_detections(self._dlib.detect(work), w / work.shape[1], h / work.shape[0])
        return sorted(dets, key=lambda d: d.area, reverse=True)
