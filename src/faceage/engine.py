"""The one engine: a photo and its options in, face rows out, for every entry point.

Batch mode, Ray Data and Spark turn a photo into rows with :func:`photo_rows`; ``faceage predict``
and ``check`` get each photo's result from :func:`isolated_results`; ``serve`` calls the estimator in a
thread. Each of them calls
:meth:`faceage.estimator.AgeEstimator.analyse` (the one per-photo path: decode, detect, filter
by :class:`~faceage.core.options.FaceOptions`, align, score; video calls it per frame). How the
model and its detector are built travels as :class:`PredictOptions`, plain data that can be
sent to worker processes, Ray actors and Spark executors; :func:`estimator_for` builds each
process's model from it once. Where processes are involved the rows are made in
:func:`faceage.workers.imap_isolated` workers (:func:`isolated_rows`): a worker that dies turns
its file into an error row with code ``worker_crashed`` and the run goes on.

A row carries what ``faceage predict --json`` gives for a face (``FaceAge.to_dict()``) plus the
image's ``path`` and the face's index. An image without a face, or one that could not be read,
still gets one row (``face`` and the face columns empty; ``error`` and ``code`` set for a
failure), so every input shows up in the output and a run can be resumed from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Iterable, Iterator

from faceage.errors import FaceageError
from faceage.estimator import COLUMNS, SCHEMA, AgeEstimator, empty_row  # noqa: F401 - the row schema, here too
from faceage.core.imageio import NamedBytes
from faceage.core.options import FaceOptions
from faceage.face.detect import DEFAULT_DETECTOR
from faceage.workers import CRASH_CODE, CRASH_MESSAGE, imap_isolated, native_failure, one_line

#: the code of an error that is not a faceage error, by whether it may have damaged the process
NATIVE_CODE, UNEXPECTED_CODE = "native_error", "unexpected_error"


@dataclass(frozen=True)
class PredictOptions:
    """Everything that decides a photo's rows: the model, its detector and which faces are scored.
    Plain, hashable data, so it can be sent to worker processes, Ray actors and Spark executors."""

    model: str | None = None
    backend: str = "auto"
    tta: str = "zoomflip"
    detector: str = DEFAULT_DETECTOR
    detector_options: tuple[tuple[str, object], ...] = ()  # (key, value) pairs, sorted: hashable, picklable
    largest: bool = False
    min_face: int = 0
    max_faces: int = 0
    fallback: bool = False

    def __post_init__(self) -> None:
        options = self.detector_options
        if isinstance(options, dict):
            options = options.items()
        object.__setattr__(self, "detector_options", tuple(sorted((str(k), _hashable(v)) for k, v in options)))
        faces = FaceOptions(self.largest, self.min_face, self.max_faces, self.fallback)  # typed and checked
        for name in ("largest", "min_face", "max_faces", "fallback"):
            object.__setattr__(self, name, getattr(faces, name))
        object.__setattr__(self, "_faces", faces)

    @property
    def faces(self) -> FaceOptions:
        """Which faces are scored (checked when the options are made)."""
        return self._faces

    def check(self):
        """Everything a worker would refuse, checked here without loading the network, and the model's record
        (:class:`~faceage.models.weights.ModelRecord`): the model file and its digests, the backend, the views and
        the detector with its options. So a bad model or option is one error before any file, and the model
        loads once, in the process that runs it."""
        from faceage.core.views import check_tta
        from faceage.face.pipeline import FacePipeline
        from faceage.models import locate
        from faceage.models.weights import read_record
        from faceage.runtime import check_backend

        path = locate(self.model, self.backend)
        check_backend(path, self.backend)
        check_tta(self.tta)
        record = read_record(path)
        FacePipeline(self.detector, **dict(self.detector_options))  # a bad detector option raises here
        return record

    def estimator(self) -> AgeEstimator:
        """A new estimator built as these options say."""
        return AgeEstimator(self.model, backend=self.backend, tta=self.tta, detector=self.detector,
                            detector_options=dict(self.detector_options))

    def settings(self) -> dict:
        """JSON-plain form (saved with a batch run's output, to resume it with the same settings)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


_ESTIMATORS: dict[tuple, AgeEstimator] = {}


def estimator_for(options: PredictOptions, *, single_threaded: bool = True) -> AgeEstimator:
    """This process's model for ``options``, loaded once.

    Batch workers, Ray actors and Spark Python workers each own one core, so by default the
    model runs on one thread: a multi-threaded one would only make them compete for the same cores.
    """
    key = (options.model, options.backend, options.tta, options.detector, options.detector_options, single_threaded)
    if key not in _ESTIMATORS:
        if single_threaded:
            os.environ["FACEAGE_THREADS"] = "1"  # read by the ONNX Runtime backend when it is created
            os.environ["OMP_NUM_THREADS"] = "1"  # the same for PyTorch, when it is first imported here
        _ESTIMATORS[key] = options.estimator()
    return _ESTIMATORS[key]


def photo_rows(estimator: AgeEstimator, source, path: str, options: FaceOptions) -> list[dict]:
    """Rows for one photo (a path, its bytes, a PIL image or an array, named ``path``); any failure is
    an error row. Whatever goes wrong with one file (unreadable, corrupt, a library error) must not stop
    a run over millions of files, so nothing raised here escapes.

    Faceage's own errors name the file already (a decoder is given ``path`` as the name); any other
    error is prefixed with it."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):  # bytes carry no name: errors name the path
            source = NamedBytes(source, path)
        return estimator.analyse(source, options).rows(path)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        return [empty_row(path, *failure(path, exc))]


def failure(path: str, exc: Exception) -> tuple[str, str]:
    """(message, code) of a photo's failure: faceage's own errors name the file already (a decoder is given
    the path as the name) and carry their code; any other error is prefixed with the path."""
    if isinstance(exc, FaceageError):
        return str(exc), exc.code
    return f"{path}: {one_line(exc)}", NATIVE_CODE if native_failure(exc) else UNEXPECTED_CODE


def predict_many(options: PredictOptions, sources: Iterable, paths: Iterable[str]) -> list[dict]:
    """Rows for several photos, with this process's single-threaded model (Ray actors, Spark workers)."""
    est = estimator_for(options)
    return [row for src, path in zip(sources, paths) for row in photo_rows(est, src, str(path), options.faces)]


# ------------------------------------------------------------------------ in worker processes
def _load(options: PredictOptions, single_threaded: bool) -> None:
    """Load the model before the first file arrives. A model the main process's check let through but this
    process cannot load (damaged weights) is not raised here, where it would kill the worker and read as a crash
    on every file: the first job raises it, and it ends the run as one error."""
    try:
        estimator_for(options, single_threaded=single_threaded)
    except FaceageError:
        pass


def _rows_job(job: tuple[PredictOptions, str, bool]) -> list[dict]:
    options, path, single_threaded = job
    est = estimator_for(options, single_threaded=single_threaded)  # a model that cannot load: the run's error
    return photo_rows(est, path, path, options.faces)


def crashed_rows(path: str) -> list[dict]:
    """The row of a file whose worker process died on it."""
    return [empty_row(path, f"{path}: {CRASH_MESSAGE}", CRASH_CODE)]


def isolated_rows(options: PredictOptions, paths: Iterable[str], *, workers: int = 1,
                  single_threaded: bool = True) -> Iterator[list[dict]]:
    """Each path's rows, in order, made in ``workers`` worker processes that may die (:mod:`faceage.workers`):
    a file whose worker dies gives one error row with code ``worker_crashed``. ``paths`` is read lazily."""
    jobs = ((options, str(p), single_threaded) for p in paths)
    return imap_isolated(_rows_job, jobs, workers=workers, initializer=_load, initargs=(options, single_threaded),
                         on_crash=lambda job: crashed_rows(job[1]),
                         suspect=lambda rows: any(r["code"] == NATIVE_CODE for r in rows))


def _analysis_job(job: tuple[PredictOptions, str | bytes, bool]) -> tuple[object, str | None, str | None]:
    options, source, single_threaded = job
    est = estimator_for(options, single_threaded=single_threaded)  # a model that cannot load: the run's error
    try:
        return est.analyse(source, options.faces).without_crops(), None, None
    except Exception as exc:  # noqa: BLE001 - one file's failure is that file's error, never the run's
        return (None, *failure(_name(source), exc))


def _name(source: str | bytes) -> str:
    """How a job's image is named in messages: its path, or "-" for bytes read from standard input."""
    return "-" if isinstance(source, bytes) else source


def isolated_results(options: PredictOptions, paths: Iterable[str | bytes], *, workers: int = 1,
                     single_threaded: bool = False) -> Iterator[tuple[object, str | None, str | None]]:
    """Each photo's :class:`~faceage.estimator.PhotoResult` (without its crops) from
    :meth:`~faceage.estimator.AgeEstimator.analyse` with ``options``, in order, made in worker processes that may
    die: ``(result, None, None)`` or ``(None, error, code)``, ``worker_crashed`` for a file whose worker died."""
    jobs = ((options, p if isinstance(p, bytes) else str(p), single_threaded) for p in paths)
    return imap_isolated(_analysis_job, jobs, workers=workers, initializer=_load, initargs=(options, single_threaded),
                         on_crash=lambda job: (None, crashed_rows(_name(job[1]))[0]["error"], CRASH_CODE),
                         suspect=lambda result: result[2] == NATIVE_CODE)
