"""Face detection: what a detector gives (plain data) and the registry of detectors by name.

Everything that leaves a detector is plain data: :class:`Detection` holds a box
``(left, top, right, bottom)`` in input pixels, the two eye centres
``((x, y), (x, y))`` ordered image-left then image-right, a score and the name of
the pass that found the face. Backends are registered by name in
:data:`DETECTORS` (or named ``package.module:factory``); :func:`get_detector` builds
one, so a second backend can be added without touching callers. The default,
``dlib`` (the paper's choice: HOG passes and 5-point landmarks), is
:class:`faceage.face.dlib_detector.DlibDetector`, imported only when it is asked for.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from faceage.errors import ConfigError

Box = tuple[int, int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face. ``box`` = (left, top, right, bottom) in input pixels; ``eyes`` =
    (image-left eye centre, image-right eye centre) as (x, y) floats."""

    box: Box
    eyes: tuple[Point, Point]
    score: float
    detector: str

    @property
    def area(self) -> int:
        l, t, r, b = self.box
        return max(0, r - l) * max(0, b - t)


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect``. An optional ``max_side`` attribute (the longest side it
    works at) lets :class:`faceage.face.pipeline.FacePipeline` decode JPEGs at a reduced
    scale for it; an optional ``landmarks(image, box) -> eyes`` method lets the pipeline
    landmark each face again on the sharper decode its crop is cut from."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an HxWx3 (or HxW) uint8 image, sorted by box area, largest first."""
        ...


#: the detector every entry point uses unless told otherwise
DEFAULT_DETECTOR = "mtcnn"
#: the built-in detectors that run dlib's passes and take its ``recover`` and ``cnn`` options
DLIB_BACKED = ("dlib", "mtcnn")
#: what ``--detector`` says about them
DETECTOR_HELP = ("face detector: mtcnn (MTCNN on photos over 640 px, finding faces from 2.4%% of the long side, "
                 "dlib's HOG passes on smaller ones) or dlib (HOG passes, the paper's detector); default %(default)s")

#: detector factories by name; a string is a factory to import when first asked for (``package.module:factory``)
DETECTORS: dict[str, Callable[..., Detector] | str] = {"dlib": "faceage.face.dlib_detector:DlibDetector",
                                                      "mtcnn": "faceage.face.mtcnn_detector:MtcnnDetector"}


def register_detector(name: str):
    def deco(factory):
        DETECTORS[name] = factory
        return factory

    return deco


_INSTANCES: dict[tuple, Detector] = {}
_INSTANCES_LOCK = threading.Lock()


def get_detector(name: str = DEFAULT_DETECTOR, **options) -> Detector:
    """Return a (cached, shared) detector of backend ``name`` built with ``options``."""
    from faceage.core.options import typed_options

    factory = DETECTORS.get(name, name)
    if isinstance(factory, str):
        factory = _imported_detector(factory)
    options = typed_options(factory, options, f"face detector {name!r}")  # "false" -> False, lists -> tuples
    key = (name, tuple(sorted(options.items())))
    with _INSTANCES_LOCK:
        det = _INSTANCES.get(key)
        if det is None:
            try:
                det = factory(**options)
            except TypeError as exc:
                raise ConfigError(f"face detector {name!r}: bad options {options} ({exc})") from exc
            _INSTANCES[key] = det
        return det


def _imported_detector(name: str) -> Callable[..., Detector]:
    """A detector factory named ``package.module:attribute``: a detector of one's own, named by plain text
    so that it reaches worker processes, Ray actors and Spark executors like the built-in ones."""
    module, sep, attr = name.partition(":")
    if not sep:
        raise ConfigError(f"unknown face detector {name!r}; choose one of {sorted(DETECTORS)} or name your own "
                          "as package.module:factory")
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"face detector {name!r} cannot be imported ({exc})") from None


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A detector's input as a contiguous HxWx3 uint8 array (grey repeated, alpha dropped)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise TypeError(f"detect() needs a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"detect() needs an HxW or HxWx3 image, got shape {img.shape}")
    return np.ascontiguousarray(img[:, :, :3])


def scale_detections(dets: list[Detection], sx: float, sy: float) -> list[Detection]:
    """Detections of a resized image in the original's pixels (``sx``, ``sy`` = original / resized)."""
    def up(p: Point) -> Point:
        return ((p[0] + 0.5) * sx - 0.5, (p[1] + 0.5) * sy - 0.5)

    return [Detection((int(round(d.box[0] * sx)), int(round(d.box[1] * sy)), int(round(d.box[2] * sx)),
                       int(round(d.box[3] * sy))), (up(d.eyes[0]), up(d.eyes[1])), d.score, d.detector)
            for d in dets]
