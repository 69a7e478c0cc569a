"""Video -> tracks of faces with fused ages.

Every ``every``-th frame the faces are detected (the estimator's detector on a copy downscaled
to ``detect_side`` px, faces from HOG's smallest there, no recovery passes: a face missed in one
frame is bridged by the tracker), aligned and scored by the age network, and the detections are
matched to tracks (:mod:`faceage.video.track`). The frames in between are not
analysed at all: a track's box there is interpolated between its boxes at the
detections before and after (so results come out ``every`` frames late), which
costs nothing and is smooth. Each scored detection adds its age distribution to the
track's :class:`~faceage.video.fusion.Fusion`.

A track gets its id when it is found a second time (a one-off false detection
never shows) and is reported when it spans at least ``min_track`` frames. A face
hidden (not detected) for more than ``max_gap`` seconds comes back as a new track.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from faceage.errors import FaceageError
from faceage.face.dlib_detector import HOG_MIN_FACE
from faceage.core.options import FaceOptions
from faceage.video.fusion import Fusion, frame_weight
from faceage.video.io import Frame, VideoReader
from faceage.video.track import Tracker

Box = tuple[int, int, int, int]
#: how video's dlib passes run on frames of ``side`` px: no quick close-up pass (a frame is not a portrait) and
#: no recovery passes (the tracker bridges a face missed in one frame)
_DLIB_FRAME = {"fast_face": 0, "recover": False, "cnn": False}
#: the built-in detectors' options on frames of ``side`` px; MTCNN (whose small frames go to those same dlib
#: passes) looks for faces from HOG's smallest there, which keeps video's frame rate (720p, every frame: 17.5
#: frames/s against dlib's 18.7, ``python -m benchmarks.video_speed --every 1 --detector D``)
VIDEO_DETECTOR_OPTIONS: dict[str, Callable[[int], dict]] = {
    "dlib": lambda side: {**_DLIB_FRAME, "max_side": side},
    "mtcnn": lambda side: {**_DLIB_FRAME, "max_side": side, "min_face": HOG_MIN_FACE / side},
}


@dataclass(frozen=True)
class TrackedFace:
    """One tracked face in one frame."""

    track: int
    box: Box  # left, top, right, bottom in frame pixels
    detected: bool  # found by the detector in this frame (False: interpolated between detections)
    frame_age: float | None  # this frame's own estimate (detected frames only)
    age: float  # the track's fused age so far
    age_interval: tuple[float, float]  # its 80% interval


@dataclass(frozen=True)
class FrameResult:
    index: int
    time: float
    image: np.ndarray = field(repr=False)  # the decoded RGB frame
    faces: list[TrackedFace]


@dataclass
class Track:
    """One person: where they are in each frame and their fused age."""

    id: int
    age: float
    age_interval: tuple[float, float]
    frames: list[int]
    times: list[float]
    boxes: list[Box]
    detected: list[bool]
    frame_ages: list[float | None]  # per-frame estimates (None where not detected)
    weights: list[float | None]  # the fusion weight of each detected frame

    @property
    def first_frame(self) -> int:
        return self.frames[0]

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    @property
    def scored_ages(self) -> list[float]:
        return [a for a in self.frame_ages if a is not None]

    def to_dict(self) -> dict:
        return {
            "id": self.id, "age": self.age, "age_interval": list(self.age_interval),
            "first_frame": self.first_frame, "last_frame": self.last_frame,
            "first_time": self.times[0], "last_time": self.times[-1], "scored_frames": len(self.scored_ages),
            "frames": [{"frame": f, "time": t, "box": list(b), "detected": d, "age": a, "weight": w}
                       for f, t, b, d, a, w in zip(self.frames, self.times, self.boxes, self.detected,
                                                   self.frame_ages, self.weights)],
        }


@dataclass
class _Track:
    fusion: Fusion
    id: int | None = None
    hits: int = 0
    rows: list = field(default_factory=list)  # (frame, time, box, detected, frame_age, weight)
    detections: dict = field(default_factory=dict)  # frame index -> (box, frame_age, weight)


def _round(v: float) -> float:
    return round(float(v), 1)


class VideoAnalysis:
    """Iterate for per-frame results (:class:`FrameResult`); :attr:`tracks` once done (or to finish).

    ``frames``: :class:`~faceage.video.io.Frame` objects in order (e.g. a VideoReader, whose
    ``info`` and ``problems`` are passed on).
    """

    def __init__(self, estimator, frames: Iterable[Frame], *, every: int = 5, detect_side: int = 800,
                 min_track: int = 10, fusion: str = "logpool", max_gap: float = 2.0,
                 faces: FaceOptions = FaceOptions()) -> None:
        if every < 1 or detect_side < 64 or min_track < 1 or max_gap < 0:
            raise ValueError("need every >= 1, detect_side >= 64, min_track >= 1, max_gap >= 0")
        if estimator.record.crop is None:
            raise FaceageError(f"{estimator.model_path}: the model was trained on pre-cropped images; "
                               "video needs a model with a face crop record")
        spec = estimator.record.crop
        self._estimator, self._frames, self._every, self._faces = estimator, frames, int(every), faces
        # the estimator's detector, made cheaper for frames when it is a built-in one: no recovery passes (dlib:
        # no quick close-up pass either), on frames downscaled to detect_side; any other detector is used as it is
        cheaper = (VIDEO_DETECTOR_OPTIONS[estimator.detector](int(detect_side))
                   if isinstance(estimator.detector, str) and estimator.detector in VIDEO_DETECTOR_OPTIONS else {})
        self._pipeline = estimator.face_pipeline(**cheaper)
        self._crop_eye_px = spec.eye_distance * spec.size
        self._tracker = Tracker(max_gap=max_gap)
        self._fusion, self._min_track = fusion, int(min_track)
        Fusion(fusion)  # an unknown method fails here, not at the first face
        self.info = getattr(frames, "info", None)
        self.problems: list[str] = getattr(frames, "problems", [])
        self.settings = {"every": self._every, "detect_side": int(detect_side), "min_track": self._min_track,
                         "max_gap": float(max_gap), "fusion": fusion, "tta": estimator.tta,
                         "model": Path(estimator.model_path).name}
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1
        self._iterating = False
        self._bad_output_seen = False

    # -- detection frames
    def _detect(self, frame: Frame) -> dict[int, Box]:
        photo = self._estimator.analyse(frame.image, self._faces, pipeline=self._pipeline)
        faces, scores = photo.faces, photo.scores
        if faces and not scores.finite.all():  # no age: the face is left out of tracking
            faces, scores = self._drop_bad_outputs(frame, faces, scores)
        keys = self._tracker.update(frame.time, [f.box for f in faces])
        out = {}
        for row, (key, face) in enumerate(zip(keys, faces)):
            t = self._tracks.setdefault(key, _Track(Fusion(self._fusion)))
            weight = frame_weight(face.eyes, face.score, self._crop_eye_px)
            t.fusion.add(scores, row, weight)
            t.hits += 1
            if t.id is None and t.hits >= 2:
                t.id, self._next_id = self._next_id, self._next_id + 1
            box = tuple(int(v) for v in face.box)
            t.detections[frame.index] = (box, _round(scores.age[row]), round(weight, 4))
            out[key] = box
        return out

    def _drop_bad_outputs(self, frame: Frame, faces: list, scores):
        """The faces whose model outputs are finite; the first frame with others is noted in ``problems``."""
        from dataclasses import replace

        from faceage.core.scoring import BAD_OUTPUT, bad_output_message

        keep = np.flatnonzero(scores.finite)
        if not self._bad_output_seen:
            self._bad_output_seen = True
            self.problems.append(f"frame {frame.index} ({frame.time:.2f} s) and later: faces skipped, "
                                 f"{bad_output_message(self.settings['model'])} [{BAD_OUTPUT}]")
        return [faces[i] for i in keep], replace(scores, logits=scores.logits[keep], reg=scores.reg[keep])

    # -- emitting frames once the next detection is known
    def _emit(self, anchor: Frame, boxes: dict[int, Box], pending: list[Frame],
              after: tuple[Frame, dict[int, Box]] | None) -> Iterator[FrameResult]:
        shown = {k: self._tracks[k] for k in boxes if self._tracks[k].id is not None}
        fused = {}
        for k, t in shown.items():
            s = t.fusion.scores()
            lo, hi = s.interval()[0]
            fused[k] = (_round(s.age[0]), (_round(lo), _round(hi)))
        for frame in [anchor, *pending]:
            faces = []
            for k, t in shown.items():
                if frame is anchor:
                    box, frame_age, weight = t.detections[frame.index]
                    detected = True
                elif after is None:  # end of the video: hold the last box
                    box, frame_age, weight, detected = boxes[k], None, None, False
                elif k in after[1]:
                    a = (frame.index - anchor.index) / max(1, after[0].index - anchor.index)
                    box = tuple(int(round((1 - a) * p + a * q)) for p, q in zip(boxes[k], after[1][k]))
                    frame_age, weight, detected = None, None, False
                else:  # lost at the next detection: not drawn in between
                    continue
                t.rows.append((frame.index, round(frame.time, 4), box, detected, frame_age, weight))
                faces.append(TrackedFace(t.id, box, detected, frame_age, *fused[k]))
            yield FrameResult(frame.index, frame.time, frame.image, faces)

    def __iter__(self) -> Iterator[FrameResult]:
        if self._iterating:
            raise RuntimeError("a VideoAnalysis can be iterated once")
        self._iterating = True
        anchor, boxes, pending = None, {}, []
        for n, frame in enumerate(self._frames):
            if n % self._every:
                pending.append(frame)
                continue
            found = self._detect(frame)
            if anchor is not None:
                yield from self._emit(anchor, boxes, pending, (frame, found))
            anchor, boxes, pending = frame, found, []
        if anchor is not None:
            yield from self._emit(anchor, boxes, pending, None)

    @property
    def tracks(self) -> list[Track]:
        """The reported tracks, by id. Before any iteration this analyses the whole video; after an
        iteration stopped early (a camera, Ctrl-C) it covers the frames yielded so far."""
        if not self._iterating:
            for _ in self:
                pass
        out = []
        for t in self._tracks.values():
            if t.id is None or not t.rows or t.rows[-1][0] - t.rows[0][0] + 1 < self._min_track:
                continue
            s = t.fusion.scores()
            lo, hi = s.interval()[0]
            frames, times, boxes, detected, ages, weights = (list(c) for c in zip(*t.rows))
            out.append(Track(t.id, _round(s.age[0]), (_round(lo), _round(hi)), frames, times, boxes, detected,
                             ages, weights))
        return sorted(out, key=lambda t: t.id)


def analyse_video(estimator, source=None, *, camera: int | None = None, start: float = 0.0, end: float | None = None,
                  threads: int = 0, format: str | None = None, max_pixels: int | None = None,
                  **options) -> VideoAnalysis:
    """:class:`VideoAnalysis` of a video file (path or binary file object) or of ``camera=N``;
    ``options`` go to :class:`VideoAnalysis` (every, detect_side, min_track, fusion, max_gap)."""
    reader = VideoReader(source, camera=camera, start=start, end=end, threads=threads, format=format,
                         max_pixels=max_pixels)
    try:
        return VideoAnalysis(estimator, reader, **options)
    except Exception:
        reader.close()
        raise
