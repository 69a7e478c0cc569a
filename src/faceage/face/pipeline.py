"""Photo -> faces -> aligned crops. Plain data in and out; no dlib types leave here.

``FacePipeline(detector="dlib", spec=CropSpec()).faces(image)`` returns every face
as a :class:`Face` (box, eyes, score, detector, crop, fallback), largest first.
No face is an empty list, not an exception; with ``fallback=True`` it is instead
one centre-crop :class:`Face` with ``fallback=True``, ``box`` = the whole image and
``eyes`` = where the crop spec would put them (an estimate). Thread-safe: the
detector serialises its own calls and alignment is pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceage.face.align import CropSpec, align, center_crop, center_crop_eyes
from faceage.face.detect import Detection, Detector, get_detector
from faceage.imageio import load_image


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in input pixels
    eyes: tuple[tuple[float, float], tuple[float, float]]  # image-left eye, image-right eye
    score: float
    detector: str  # which pass found it ("hog", "hog-up1", ..., "cnn"), "center-crop" for the fallback
    crop: np.ndarray = field(repr=False)  # size x size x 3 uint8, aligned per the CropSpec
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


class FacePipeline:
    """Detect, align and crop. ``detector`` is a backend name (see
    :func:`faceage.face.detect.get_detector`) or an object with ``detect(image)``."""

    def __init__(self, detector: str | Detector = "dlib", spec: CropSpec = CropSpec(), **detector_options):
        self.detector = get_detector(detector, **detector_options) if isinstance(detector, str) else detector
        self.spec = spec

    def detect(self, image) -> list[Detection]:
        return self.detector.detect(self._as_array(image))

    @staticmethod
    def _as_array(image) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            return image
        return load_image(image)

    def faces(self, image, *, largest: bool = False, fallback: bool = False, min_face: int = 0) -> list[Face]:
        """All faces in ``image`` (array, path, bytes or PIL image), largest first.

        ``largest``: keep only the biggest face. ``min_face``: drop faces whose box is
        narrower than this many pixels. ``fallback``: when no face is left, return one
        centre-crop face marked ``fallback=True`` instead of ``[]``."""
        img = self._as_array(image)
        dets = [d for d in self.detector.detect(img) if (d.box[2] - d.box[0]) >= min_face]
        dets.sort(key=lambda d: d.area, reverse=True)
        if largest:
            dets = dets[:1]
        out = [Face(d.box, d.eyes, d.score, d.detector, align(img, d.eyes, self.spec), False) for d in dets]
        if not out and fallback:
            h, w = img.shape[:2]
            out.append(Face((0, 0, w, h), center_crop_eyes(img.shape, self.spec), 0.0, "center-crop",
                            center_crop(img, self.spec), True))
        return out
