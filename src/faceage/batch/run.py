"""Local batch mode: N worker processes, each with its own single-threaded model.

Paths are discovered lazily and sent one at a time to the workers of the engine's isolation
layer (:func:`faceage.engine.isolated_rows`): memory stays flat on any tree size, a file whose
worker dies becomes an error row (``worker_crashed``) and the run goes on. Results come back in
discovery order and are written in chunks (:mod:`faceage.batch.output`), so a rerun of the same
command skips what is done, failed files included (``retry_errors`` tries those again), and
finishes the rest.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from faceage.batch.files import problem_row, walk_images
from faceage.batch.output import OutputLock, PartStore, output_format
from faceage.engine import PredictOptions, isolated_rows
from faceage.errors import FaceageError
from faceage.models import locate


@dataclass
class BatchReport:
    """What a run did: counts of this run's images and rows, and the time it took."""

    output: str
    skipped: int = 0  # images already done by an earlier run
    images: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    rows: int = 0  # rows in the finished output, earlier runs included
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def add(self, rows: list[dict]) -> None:
        self.images += len({r["path"] for r in rows})
        self.faces += sum(r["face"] is not None for r in rows)
        self.errors += sum(r["error"] is not None for r in rows)
        self.no_face += sum(r["face"] is None and r["error"] is None for r in rows)

    def summary(self) -> str:
        return (f"{self.images} images in {self.seconds:.1f} s ({self.images_per_s:.2f} images/s): {self.faces} faces, "
                f"{self.no_face} without a face, {self.errors} unreadable; {self.skipped} already done; "
                f"{self.rows} rows in {self.output}")


class _Counter(threading.Thread):
    """Counts the images still to do in the background, so the progress bar can show an ETA."""

    def __init__(self, paths: list[str], recursive: bool, done: set[str]) -> None:
        super().__init__(daemon=True)
        self.args, self.done, self.total = (paths, recursive), done, None

    def run(self) -> None:  # problems are the main loop's to report
        self.total = sum(str(p) not in self.done for p in walk_images(*self.args, lambda *p: None))


class _Sink:
    """Results in discovery order -> chunks on disk, counts and the progress bar."""

    def __init__(self, store: PartStore, report: BatchReport, counter: _Counter, chunk_size: int, progress: bool):
        from tqdm import tqdm

        self.store, self.report, self.counter, self.chunk_size = store, report, counter, chunk_size
        self.pending: list[dict] = []
        self.images = 0
        self.bar = tqdm(unit="img", desc="predict", disable=not progress, file=sys.stderr, smoothing=0.05)

    def add(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        self.report.add(rows)
        n = len({r["path"] for r in rows})
        self.images += n
        if self.counter.total is not None and self.bar.total is None:
            self.bar.total = self.counter.total
        self.bar.update(n)
        if self.images >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        self.store.add(self.pending)
        self.pending, self.images = [], 0


#: processes per usable CPU a run starts at most: past that they only add memory (each loads the model)
MAX_WORKERS_PER_CPU = 2
#: memory one worker needs beyond its model file (interpreter, ONNX Runtime or PyTorch, dlib, a decoded photo)
WORKER_BASE_BYTES = 400 * 2**20


def default_workers() -> int:
    """The CPUs this process may use (Linux knows its affinity; macOS and Windows: all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _available_memory() -> int | None:
    """MemAvailable of Linux's /proc/meminfo in bytes (None elsewhere: then only the CPUs bound the workers)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_workers(requested: int | None, model_bytes: int = 0) -> tuple[int, str | None]:
    """The worker count a run starts: ``requested`` (default: one per usable CPU) capped at
    :data:`MAX_WORKERS_PER_CPU` per CPU and at what the available memory holds, and why it was capped."""
    cpus = default_workers()
    if requested is not None and requested < 1:
        raise FaceageError(f"--workers {requested}: give 1 or more processes")
    n = requested or cpus
    limits = [(MAX_WORKERS_PER_CPU * cpus, f"{MAX_WORKERS_PER_CPU} per CPU, {cpus} CPUs here")]
    memory = _available_memory()
    if memory is not None:
        each = WORKER_BASE_BYTES + 3 * model_bytes
        limits.append((max(1, memory // each), f"{memory / 2**30:.1f} GiB available, about "
                                                f"{each / 2**20:.0f} MiB per worker"))
    cap, why = min(limits)
    if n <= cap:
        return n, None
    return cap, f"--workers {n}: starting {cap} ({why}); more would only compete for the same cores and memory"


def run_batch(paths: Iterable[str | os.PathLike], output: str | os.PathLike, *,
              options: PredictOptions = PredictOptions(), recursive: bool = False, workers: int | None = None,
              chunk_size: int = 512, progress: bool = True, retry_errors: bool = False) -> BatchReport:
    """Predict every image under ``paths`` into ``output`` (.parquet, .csv or .jsonl), resumably.

    ``workers`` processes (default: one per available core; at most :func:`usable_workers`) each score one
    image at a time;
    rows are written every ``chunk_size`` images, which is also the most a killed run has to
    redo. A rerun skips every image already in the output, those that failed included, unless
    ``retry_errors``.
    """
    paths = [str(p) for p in paths]
    problems: list = []
    if next(iter(walk_images(paths, recursive, lambda *p: problems.append(p))), None) is None and not problems:
        raise FaceageError(f"no image found in {' '.join(paths)} (use -r for sub-folders)")
    output_format(output)
    options.check()  # a bad model or option: one error here, not one per file in the workers
    workers, note = usable_workers(workers, locate(options.model, options.backend).stat().st_size)
    if note and progress:
        print(f"note: {note}", file=sys.stderr)
    with OutputLock(output):  # before the parts are touched: a second run on this output is refused here
        return _run_locked(paths, output, options, recursive, workers, chunk_size, progress, retry_errors)


def _run_locked(paths: list[str], output, options: PredictOptions, recursive: bool, workers: int, chunk_size: int,
                progress: bool, retry_errors: bool) -> BatchReport:
    store = PartStore(output, options.settings(), retry_errors=retry_errors)
    done = store.done()
    report = BatchReport(str(output), skipped=len(done))
    counter = _Counter(paths, recursive, done)
    counter.start()
    sink = _Sink(store, report, counter, chunk_size, progress)

    def problem(path: str, error) -> None:  # a file-system oddity: an error row as soon as it is met
        if path not in done:
            sink.add([problem_row(path, error)])

    todo = (p for p in map(str, walk_images(paths, recursive, problem)) if p not in done)
    t0 = time.perf_counter()
    results = isolated_rows(options, todo, workers=workers)
    try:
        for rows in results:
            sink.add(rows)
    finally:  # also when interrupted: keep the images already scored
        results.close()
        sink.flush()
        sink.bar.close()
    report.rows = store.finish()
    report.seconds = time.perf_counter() - t0
    return report
