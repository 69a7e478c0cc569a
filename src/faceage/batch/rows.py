"""Face rows: the one flat record per face shared by local batch mode, Ray Data and Spark.

A row carries what ``faceage predict --json`` gives for a face (``FaceAge.to_dict()``)
plus the image's ``path`` and the face's index. An image without a face, or one that
could not be read, still gets one row (``face`` and the face columns empty, ``error`` set
for a failure), so every input shows up in the output and a run can be resumed from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from faceage.estimator import AgeEstimator, FaceAge
from faceage.imageio import load_image

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
}
COLUMNS = tuple(SCHEMA)


@dataclass(frozen=True)
class PredictOptions:
    """What ``faceage predict`` is asked for; plain data, so it can be sent to worker processes."""

    model: str | None = None
    tta: str = "zoomflip"
    largest: bool = False
    min_face: int = 0
    max_faces: int = 0
    fallback: bool = False
    detector_options: tuple[tuple[str, object], ...] = ()  # (key, value) pairs: hashable, picklable


_ESTIMATORS: dict[tuple, AgeEstimator] = {}


def single_threaded_estimator(options: PredictOptions) -> AgeEstimator:
    """This process's model for ``options``, loaded once and run on one thread.

    Batch workers, Ray actors and Spark Python workers each own one core, so a
    multi-threaded model would only make them compete for the same cores.
    """
    key = (options.model, options.tta, repr(options.detector_options))
    if key not in _ESTIMATORS:
        os.environ["FACEAGE_THREADS"] = "1"  # read by the ONNX Runtime backend when it is created
        os.environ["OMP_NUM_THREADS"] = "1"  # the same for PyTorch, when it is first imported here
        _ESTIMATORS[key] = AgeEstimator(options.model, tta=options.tta,
                                        detector_options=dict(options.detector_options))
    return _ESTIMATORS[key]


def empty_row(path: str, error: str | None = None) -> dict:
    """The row of an image with no face (``error`` None) or one that failed (``error`` says why)."""
    row = dict.fromkeys(COLUMNS)
    row.update(path=path, error=error)
    return row


def face_rows(path: str, faces: list[FaceAge]) -> list[dict]:
    """One row per face, with ``predict --json``'s values; one empty row when there is none. A face
    without an age (non-finite model outputs) has ``error`` set to its message and ``[code]``."""
    if not faces:
        return [empty_row(path)]
    rows = []
    for i, f in enumerate(faces):
        row = {**empty_row(path), "face": i, **f.to_dict()}
        if row.pop("code", None) is not None:
            row["error"] = f"{f.error} [{f.code}]"
        rows.append(row)
    return rows


def predict_rows(estimator: AgeEstimator, source, path: str, options: PredictOptions) -> list[dict]:
    """Rows for one image (a path or its bytes, named ``path``); any failure becomes an error row.

    Whatever goes wrong with one file (unreadable, corrupt, a library error) must not
    stop a run over millions of files, so nothing raised here escapes.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):  # bytes carry no name: errors name the path
            source = load_image(source, name=path)
        faces = estimator.predict(source, largest=options.largest, min_face=options.min_face,
                                  max_faces=options.max_faces, fallback=options.fallback)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        message = str(exc) if path in str(exc) else f"{path}: {type(exc).__name__}: {exc}"
        return [empty_row(path, message)]
    return face_rows(path, faces)


def predict_many(options: PredictOptions, sources: Iterable, paths: Iterable[str]) -> list[dict]:
    """Rows for several images, with this process's single-threaded model."""
    est = single_threaded_estimator(options)
    return [row for src, path in zip(sources, paths) for row in predict_rows(est, src, str(path), options)]
