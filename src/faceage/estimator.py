"""The Python API: ``AgeEstimator().predict("photo.jpg")`` -> faces with ages.

Photo -> faces (detect, align, crop as the model's record says) -> backend ->
age distribution -> :class:`FaceAge`. The model is loaded once; ``predict`` is
safe to call from several threads.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from faceage.core.preprocess import input_batch
from faceage.core.scoring import BAD_OUTPUT, bad_output_message, score
from faceage.face.align import CropSpec
from faceage.face.detect import DEFAULT_DETECTOR, Detector
from faceage.core.imageio import ImageSource, load_image
from faceage.models import locate
from faceage.core.options import FaceOptions
from faceage.core.views import check_tta

if TYPE_CHECKING:
    from PIL import Image

#: aligned face crops: one HxWx3 uint8 array, an (N, H, W, 3) uint8 array or a sequence of HxWx3 arrays
Crops = Union[np.ndarray, Sequence[np.ndarray]]

@dataclass(frozen=True)
class FaceAge:
    """One face: where it is and how old it looks."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in input pixels
    eyes: tuple[tuple[float, float], tuple[float, float]]  # image-left eye, image-right eye
    age: float | None  # years, one decimal (None only with an error)
    age_interval: tuple[float, float] | None  # 80% interval of the predicted distribution
    score: float  # detector confidence
    fallback: bool = False  # True: no face found, a centre crop was scored instead
    error: str | None = None  # set (with age None) when the model's outputs were NaN or infinite

    @property
    def code(self) -> str | None:
        """The error's code (:data:`faceage.core.scoring.BAD_OUTPUT`), None for a face with an age."""
        return None if self.error is None else BAD_OUTPUT

    def line(self) -> str:
        """``faceage predict``'s text for this face."""
        if self.error is not None:
            return f"box {list(self.box)} error: {self.error} [{self.code}]"
        lo, hi = self.age_interval
        note = " (no face found: centre crop)" if self.fallback else ""
        return f"box {list(self.box)} age {self.age:.1f} (80% interval {lo:.0f}-{hi:.0f}){note}"

    def to_dict(self) -> dict:
        """``predict --json``'s face: box, eyes, age, age_interval, score, fallback; a face without an age
        has ``age`` and ``age_interval`` null and ``error`` and ``code`` keys (plain JSON, never NaN)."""
        d = asdict(self)
        d["box"] = list(self.box)
        d["eyes"] = [list(e) for e in self.eyes]
        d["age_interval"] = None if self.age_interval is None else list(self.age_interval)
        if self.error is None:
            del d["error"]
        else:
            d["code"] = self.code
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FaceAge":
        """The inverse of :meth:`to_dict` (extra keys, such as a row's ``path``, are ignored)."""
        error = d.get("error")  # a face row's error is its face's (non-finite model outputs)
        return cls(tuple(int(v) for v in d["box"]), tuple(tuple(float(v) for v in e) for e in d["eyes"]),
                   None if error else float(d["age"]), None if error else tuple(float(v) for v in d["age_interval"]),
                   float(d["score"]), bool(d["fallback"]), error)


#: the keys of :meth:`FaceAge.to_dict`, in order
FACE_FIELDS = ("box", "eyes", "age", "age_interval", "score", "fallback")

#: Column name -> type (Spark DDL names, mapped to Arrow by the Parquet writer).
SCHEMA: dict[str, str] = {
    "path": "string",
    "face": "int",
    "box": "array<int>",
    "eyes": "array<array<double>>",
    "age": "double",
    "age_interval": "array<double>",
    "score": "double",
    "fallback": "boolean",
    "error": "string",
    "code": "string",  # the error's machine-readable kind (faceage.errors codes, worker_crashed, ...)
}
COLUMNS = tuple(SCHEMA)


def empty_row(path: str, error: str | None = None, code: str | None = None) -> dict:
    """The row of an image with no face (``error`` None) or one that failed (``error`` says why)."""
    row = dict.fromkeys(COLUMNS)
    row.update(path=path, error=error, code=code)
    return row


@dataclass
class PhotoResult:
    """One photo analysed (:meth:`AgeEstimator.analyse`, the one per-photo path): the faces found (largest
    first, with their aligned crops), their scores and the photo's size. Every entry point reads it: as ages
    (:meth:`ages`), age checks (:meth:`checks`), the command line's text and JSON lines (:meth:`lines`,
    :meth:`to_json`), output rows (:meth:`rows`: batch, Ray, Spark) or the HTTP answer (:meth:`response`)."""

    faces: list  # faceage.face.pipeline.Face
    scores: object = field(repr=False)  # faceage.core.scoring.Scores, one row per face
    model: str = "model"  # the model's file name, for errors
    size: tuple[int, int] = (0, 0)  # the photo's (width, height) in pixels

    def ages(self) -> list[FaceAge]:
        """The faces as :class:`FaceAge` (rounded as ``predict`` reports them); a face whose outputs are NaN
        or infinite (:attr:`faceage.core.scoring.Scores.finite`) has no age and an error naming the model."""
        ages, intervals, finite = self.scores.age, self.scores.interval(), self.scores.finite
        return [
            FaceAge(tuple(int(v) for v in f.box), tuple((round(float(x), 1), round(float(y), 1)) for x, y in f.eyes),
                    round(float(a), 1) if ok else None, (round(float(lo), 1), round(float(hi), 1)) if ok else None,
                    round(float(f.score), 3), f.fallback, None if ok else bad_output_message(self.model))
            for f, a, (lo, hi), ok in zip(self.faces, ages, intervals, finite)
        ]

    def checks(self, policy) -> list:
        """The faces as :class:`faceage.checks.policy.AgeCheck` under ``policy`` (an ``AgeCheckPolicy``)."""
        from faceage.checks.policy import checks

        return checks(self.scores, policy, [tuple(int(v) for v in f.box) for f in self.faces], self.model)

    def answer(self, policy=None) -> list:
        """Its ages, or its age checks under ``policy``."""
        return self.ages() if policy is None else self.checks(policy)

    def to_json(self, path: str, policy=None) -> dict:
        """The photo's JSON line: ``{"path", "faces"}`` (``predict --json``), with ``"over"`` under ``policy``
        (``check --json``)."""
        over = {} if policy is None else {"over": policy.over}
        return {"path": path, **over, "faces": [a.to_dict() for a in self.answer(policy)]}

    def lines(self, path: str, policy=None) -> list[tuple[str, bool]]:
        """The photo's text lines, each with whether it reports an error: one per face, or "no face found"."""
        return [(f"{path}: {a.line()}", a.error is not None) for a in self.answer(policy)] or [
            (f"{path}: no face found", False)]

    def rows(self, path: str) -> list[dict]:
        """The photo's output rows (batch files, Ray, Spark; :data:`SCHEMA`): one per face with ``predict
        --json``'s values, or one row with the face columns empty when there is no face."""
        faces = self.ages()
        if not faces:
            return [empty_row(path)]
        return [{**empty_row(path), "face": i, **f.to_dict()} for i, f in enumerate(faces)]

    def response(self, model: str, elapsed_ms: float, policy=None) -> dict:
        """The HTTP answer (``/v1/estimate``; ``/v1/check`` under ``policy``, with the policy's summary)."""
        w, h = self.size
        out = {"faces": [a.to_dict() for a in self.answer(policy)], "width": int(w), "height": int(h),
               "model": model, "elapsed_ms": round(elapsed_ms, 2)}
        return out if policy is None else {**out, "policy": policy.summary()}

    def without_crops(self) -> "PhotoResult":
        """The same result without the faces' aligned crops (kilobytes each), to send between processes."""
        return replace(self, faces=[replace(f, crop=None) for f in self.faces])


@dataclass(frozen=True)
class AgeEstimate:
    """The age model's answer for one aligned crop."""

    age: float | None  # None (with ``error``) when the model's outputs were NaN or infinite
    age_interval: tuple[float, float] | None
    distribution: np.ndarray = field(repr=False)  # probabilities of ages 0..100 (left out of the repr)
    error: str | None = None  # code faceage.core.scoring.BAD_OUTPUT


class AgeEstimator:
    """Estimate ages of faces in photos.

    ``model``: a bundled model's name (``"fast"``; :func:`faceage.models.list_models`), a model
    file (.safetensors or .onnx) or a training run folder; the default bundled model when omitted. ``backend``: "auto", "torch" or "onnx".
    ``tta``: test-time views averaged per face (:mod:`faceage.core.views`): ``"zoomflip"``
    (default: zoom 0.95 as is + zoom 1.05 mirrored, two runs of the age network), ``"full"``
    (four), ``"flip"`` (two) or ``"none"``; on the default model's validation split 5.13 /
    5.10 / 5.21 / 5.38 MAE.
    ``detector``: a face detector backend name (``"dlib"``) built with ``detector_options``
    (e.g. ``{"cnn": False, "max_side": 1024}``: see :class:`faceage.face.dlib_detector.DlibDetector`),
    or an object with ``detect(image)`` returning :class:`faceage.face.detect.Detection` s.
    """

    def __init__(self, model: str | Path | None = None, *, backend: str = "auto", detector: str | Detector = DEFAULT_DETECTOR,
                 detector_options: dict | None = None, device: str = "cpu", tta: str = "zoomflip") -> None:
        from faceage.runtime import load_backend

        self.model_path = locate(model, backend)
        self.backend = load_backend(self.model_path, backend=backend, device=device)
        self.record = self.backend.record
        self.tta = check_tta(tta)
        self.detector, self.detector_options = detector, dict(detector_options or {})
        # built now so that a bad detector option fails here, not at the first photo
        self._pipeline = self.face_pipeline()

    @property
    def input_size(self) -> int:
        return self.record.input_size

    @property
    def pipeline(self):
        """The face pipeline cropping as the model was trained."""
        return self._pipeline

    def face_pipeline(self, **overrides):
        """A face pipeline with this estimator's detector and crop spec, its detector options updated
        by ``overrides`` (video detects with cheaper settings). A detector given as an object is used
        as it is: it configures itself."""
        from faceage.face.pipeline import FacePipeline

        spec = self.record.crop or CropSpec()
        if not isinstance(self.detector, str):
            return FacePipeline(self.detector, spec=spec, **self.detector_options)  # options given too: refused
        return FacePipeline(self.detector, spec=spec, **{**self.detector_options, **overrides})

    def score_aligned(self, crops: Crops):
        """:class:`faceage.core.scoring.Scores` for aligned crops (made with the record's crop spec, or
        network-input sized), resized to the model's input by the one preprocessing path."""
        if isinstance(crops, np.ndarray) and crops.ndim in (2, 3):
            crops = crops[None]  # one crop, not a batch of rows
        checked = [load_image(np.asarray(c), name="crop") for c in crops]
        batch = input_batch(checked, self.record.input_size) if checked else np.zeros(
            (0, self.input_size, self.input_size, 3), np.uint8)
        return score(self.backend, batch, self.tta)

    def predict_aligned(self, crops: Crops) -> list[AgeEstimate]:
        """Ages for already-aligned crops: an (N, H, W, 3) uint8 array, a list of HxWx3 uint8
        arrays, or one HxWx3 crop. Other dtypes are rejected (ImageError), never silently cast."""
        scores = self.score_aligned(crops)
        return [
            AgeEstimate(round(a, 1), (round(lo, 1), round(hi, 1)), p) if ok
            else AgeEstimate(None, None, p, bad_output_message(self.model_path.name))
            for a, (lo, hi), p, ok in zip(scores.age.tolist(), scores.interval().tolist(), scores.probs, scores.finite)
        ]

    def analyse(self, image: ImageSource, options: FaceOptions = FaceOptions(), *, pipeline=None) -> PhotoResult:
        """The one path from a photo to its faces' scores (predict, batch, Ray, Spark, serve and video).

        ``image``: path, bytes, PIL image or HxWx3 uint8 RGB array. A JPEG path or bytes is
        decoded at a reduced scale for detection (see :mod:`faceage.face.pipeline`); boxes and
        eyes are in the full photo's pixels. ``pipeline``: another face pipeline of this
        estimator (:meth:`face_pipeline`) instead of its own. Unreadable images raise
        :class:`faceage.errors.ImageError`."""
        if self.record.crop is None:  # a model trained on pre-cropped images: use the image whole
            img = load_image(image)
            h, w = img.shape[:2]
            from faceage.face.pipeline import Face

            face = Face((0, 0, w, h), ((w * 0.35, h * 0.4), (w * 0.65, h * 0.4)), 0.0, "whole-image", img, True)
            return PhotoResult([face], self.score_aligned([img]), self.model_path.name, (w, h))
        faces, size = (pipeline or self._pipeline).find(image, options)
        return PhotoResult(faces, self.score_aligned([f.crop for f in faces]), self.model_path.name, size)

    def predict(self, image: ImageSource, *, largest: bool = False, min_face: int = 0, max_faces: int = 0,
                fallback: bool = False) -> list[FaceAge]:
        """Faces in ``image`` (path, bytes, PIL image or HxWx3 uint8 RGB array), largest first
        (:meth:`analyse` with :class:`FaceOptions`). No face gives ``[]``; with ``fallback=True`` a
        centre crop is scored instead and marked ``fallback=True``. A face whose model outputs are NaN or
        infinite has ``age`` None and ``error`` set (code ``bad_model_output``): one bad face never hides
        the others."""
        return self.analyse(image, FaceOptions(largest, min_face, max_faces, fallback)).ages()

    def check(self, image: ImageSource, over: int = 18, *, policy=None, largest: bool = False, min_face: int = 0,
              max_faces: int = 0) -> list:
        """An age check per face in ``image``: :class:`faceage.checks.policy.AgeCheck` (box, age, calibrated
        ``p_over``, ``decision`` "pass" or "refer", the policy), largest first; no face gives ``[]``.

        ``policy``: an :class:`faceage.checks.policy.AgeCheckPolicy` (e.g. from
        :func:`faceage.checks.fitting.fit_policy` on your own labelled faces); by default the model record's
        policy for ``over`` (the bundled model has 13, 16, 18, 21 and 25; others raise
        :class:`faceage.checks.policy.NoPolicyError`).
        Faces are found as :meth:`predict` finds them."""
        policy = self._policy(over, policy)
        return self.analyse(image, FaceOptions(largest, min_face, max_faces)).checks(policy)  # the one path

    def check_aligned(self, crops, over: int = 18, *, policy=None) -> list:
        """:meth:`check` for already-aligned crops (as :meth:`predict_aligned` takes them); boxes are None."""
        from faceage.checks.policy import checks

        return checks(self.score_aligned(crops), self._policy(over, policy), model=self.model_path.name)

    def _policy(self, over: int, policy):
        from faceage.checks.policy import NoPolicyError, policy_for

        if policy is None:
            return policy_for(self.record, over)
        if policy.over != over:
            raise NoPolicyError(f"the policy given is for over={policy.over}, not over={over}")
        return policy

    def annotate(self, image: ImageSource, faces: Sequence[FaceAge] | None = None, **options) -> Image.Image:
        """``image`` with each face's box, eyes and ``age (low-high)`` drawn: a PIL image, which Jupyter
        displays as a picture (``est.annotate("photo.jpg")`` as a cell's last line) and ``.save()`` writes.
        ``faces``: from an earlier :meth:`predict` of the same image; predicted here (with ``options``,
        e.g. ``largest=True``) when omitted."""
        from faceage.annotate import annotate

        faces = self.predict(image, **options) if faces is None else faces  # as predict finds them (reduced JPEG decode)
        return annotate(load_image(image), faces)

    def predict_video(self, video=None, *, camera: int | None = None, every: int = 5, start: float = 0.0,
                      end: float | None = None, **options):
        """Faces followed through a video file (mp4, mov, mkv, webm, avi) or ``camera=N``, with ages
        fused over time. Iterate the answer for per-frame results (the decoded frame, each face's
        track id, box and fused age so far); its ``.tracks`` are the people found. See
        :mod:`faceage.video` (needs the ``video`` extra) for ``every`` and the other options."""
        from faceage.extras import require

        require("video", "predict_video")
        from faceage.video.pipeline import analyse_video

        return analyse_video(self, video, camera=camera, start=start, end=end, every=every, **options)
