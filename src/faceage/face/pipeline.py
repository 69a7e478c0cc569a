"""Photo -> faces -> aligned crops. Plain data in and out; no dlib types leave here.

``FacePipeline(detector="mtcnn", spec=CropSpec()).faces(image)`` returns every face
as a :class:`Face` (box, eyes, score, detector, crop, fallback), largest first.
No face is an empty list, not an exception; with ``fallback=True`` it is instead
one centre-crop :class:`Face` with ``fallback=True``, ``box`` = the whole image and
``eyes`` = where the crop spec would put them (an estimate). Thread-safe: the
detector serialises its own calls and alignment is pure.

Decoding only what is needed: a JPEG given as a path or bytes is decoded at a
reduced scale (:func:`faceage.core.imageio.load_image_scaled`) no smaller than 3/4 of the
detector's working size, and enlarged to it for the detector when smaller (``dlib``,
2000 px: a 3000-px photo decoded at 1500 px, detected at 2000, cheaper than a full decode;
``mtcnn``, 1000 px: a 12 MP photo decoded at 1/4); boxes and
eyes are mapped back to the full-resolution photo, and each crop is cut from that
decode when it holds enough pixels for the crop spec, otherwise from one sharper
decode of the file (as small as the smallest face allows), where a detector with a
``landmarks`` method (``mtcnn``) finds each face's eyes again. Other inputs are decoded
(or taken) in full, once.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from faceage.core.options import FaceOptions
from faceage.errors import ConfigError
from faceage.face.align import CropSpec, align, center_crop, center_crop_eyes
from faceage.face.detect import DEFAULT_DETECTOR, Detection, Detector, get_detector, scale_detections
from faceage.core.imageio import load_image, load_image_scaled

#: A JPEG is decoded at the smallest DCT scale at least this fraction of the detector's
#: working size, then enlarged to it: decoding 3000 px at 1/2 and enlarging 1.33x is
#: cheaper than a full decode, and HOG finds the enlarged faces as it does upsampled ones.
DECODE_FRACTION = 0.75


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in input pixels
    eyes: tuple[tuple[float, float], tuple[float, float]]  # image-left eye, image-right eye
    score: float
    detector: str  # which pass found it ("hog", "hog-up1", ..., "cnn"), "center-crop" for the fallback
    crop: np.ndarray | None = field(repr=False)  # size x size x 3 uint8, aligned per the CropSpec (None once
    # dropped for sending between processes: PhotoResult.without_crops)
    fallback: bool = False

    def to_dict(self) -> dict:
        """JSON-plain description (without the crop)."""
        return {
            "box": [int(v) for v in self.box],
            "eyes": [[float(x), float(y)] for x, y in self.eyes],
            "score": float(self.score),
            "detector": self.detector,
            "fallback": bool(self.fallback),
        }


@dataclass(frozen=True)
class _Decoded:
    """An image as decoded for detection and the full-resolution photo it stands for."""

    array: np.ndarray
    full_size: tuple[int, int]  # (width, height)
    source: object = None  # a path or bytes that can be decoded again, sharper

    @property
    def factor(self) -> tuple[float, float]:
        """Full-resolution pixels per decoded pixel, (x, y)."""
        return self.full_size[0] / self.array.shape[1], self.full_size[1] / self.array.shape[0]


class FacePipeline:
    """Detect, align and crop. ``detector`` is a backend name (see
    :func:`faceage.face.detect.get_detector`, which ``detector_options`` are passed to)
    or an object with ``detect(image)``."""

    def __init__(self, detector: str | Detector = DEFAULT_DETECTOR, spec: CropSpec = CropSpec(), **detector_options):
        if isinstance(detector, str):
            self.detector = get_detector(detector, **detector_options)
        elif detector_options:
            raise ConfigError(f"detector options {sorted(detector_options)} given with a detector instance; "
                              "configure the instance itself")
        else:
            self.detector = detector
        self.spec = spec

    def detect(self, image) -> list[Detection]:
        return self.detector.detect(self._as_array(image))

    @staticmethod
    def _as_array(image) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            return image
        return load_image(image)

    def _side(self) -> int:
        """The detector's working size (its ``max_side``), 0 when it has none."""
        return int(getattr(self.detector, "max_side", 0) or 0)

    def _decode(self, image) -> _Decoded:
        side = self._side()
        if side and isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
            arr, full = load_image_scaled(image, math.ceil(side * DECODE_FRACTION))
            return _Decoded(arr, full, image if arr.shape[1] < full[0] or arr.shape[0] < full[1] else None)
        arr = self._as_array(image)
        return _Decoded(arr, (arr.shape[1], arr.shape[0]))

    def faces(self, image, **options) -> list[Face]:
        """:meth:`find`'s faces alone, the options given as keywords of :class:`FaceOptions`."""
        return self.find(image, FaceOptions(**options))[0]

    def find(self, image, options: FaceOptions = FaceOptions()) -> tuple[list[Face], tuple[int, int]]:
        """All faces in ``image`` (array, path, bytes or PIL image), largest first, in
        full-resolution pixels, and the photo's (width, height); which faces, as ``options`` say
        (:class:`FaceOptions`, checked when made): ``largest`` keeps only the biggest face, ``max_faces``
        the biggest this many (0: all); ``min_face`` drops faces whose box is narrower than this many
        pixels; with ``fallback``, when no face is left, one centre-crop face marked ``fallback=True``
        instead of none."""
        dec = self._decode(image)
        dets = self._detect(dec)
        dets = sorted((d for d in dets if d.box[2] - d.box[0] >= options.min_face), key=lambda d: d.area,
                      reverse=True)
        keep = 1 if options.largest else options.max_faces
        if keep:
            dets = dets[:keep]
        if not dets:
            if not options.fallback:
                return [], dec.full_size
            w, h = dec.full_size
            return [Face((0, 0, w, h), center_crop_eyes((h, w), self.spec), 0.0, "center-crop",
                         center_crop(dec.array, self.spec), True)], dec.full_size
        src = self._crop_source(dec, dets)
        fx, fy = src.factor

        def inside(p: tuple[float, float]) -> tuple[float, float]:  # full-resolution -> src pixels
            return ((p[0] + 0.5) / fx - 0.5, (p[1] + 0.5) / fy - 0.5)

        landmarks = getattr(self.detector, "landmarks", None) if src is not dec else None
        faces = []
        for d in dets:
            if landmarks is None:
                eyes, in_src = d.eyes, (inside(d.eyes[0]), inside(d.eyes[1]))
            else:  # the eyes again, on the sharper pixels the crops come from
                in_src = landmarks(src.array, (d.box[0] / fx, d.box[1] / fy, d.box[2] / fx, d.box[3] / fy))
                eyes = tuple(((x + 0.5) * fx - 0.5, (y + 0.5) * fy - 0.5) for x, y in in_src)
            faces.append(Face(d.box, eyes, d.score, d.detector, align(src.array, in_src, self.spec), False))
        return faces, dec.full_size

    def _detect(self, dec: _Decoded) -> list[Detection]:
        """The detector's faces in full-resolution pixels. A reduced decode smaller than the
        detector's working size (and than the photo) is enlarged to it first, so that the
        smallest face the detector sees is the same fraction of the photo as on a full decode."""
        arr = dec.array
        h, w = arr.shape[:2]
        target = min(self._side(), max(dec.full_size))
        if max(h, w) < target:
            k = target / max(h, w)
            arr = np.asarray(Image.fromarray(arr).resize((round(w * k), round(h * k)), Image.BILINEAR))
        dets = self.detector.detect(arr)
        sx, sy = dec.full_size[0] / arr.shape[1], dec.full_size[1] / arr.shape[0]
        return scale_detections(dets, sx, sy) if (sx, sy) != (1.0, 1.0) else dets

    def _crop_source(self, dec: _Decoded, dets: list[Detection]) -> _Decoded:
        """``dec`` when it has at least one pixel per crop pixel for every face, else one
        sharper decode of the file: as small as the smallest face allows."""
        if dec.source is None:
            return dec
        # full-resolution pixels per crop pixel of each face (eye distance -> spec's eye distance)
        step = min(math.dist(*d.eyes) for d in dets) / (self.spec.eye_distance * self.spec.face_size)
        if step >= max(dec.factor):
            return dec
        side = math.ceil(max(dec.full_size) / max(step, 1.0))
        arr, full = load_image_scaled(dec.source, side)
        return _Decoded(arr, full)
