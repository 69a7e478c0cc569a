"""Per-file work in worker processes that may die: one file's native crash never stops a batch.

dlib and the image decoders are C/C++; on a hostile or unlucky file they can abort or
segfault the process (heap corruption on thin images in dlib's CNN pass was one).
:func:`imap_isolated` runs ``fn(job)`` in a :class:`~concurrent.futures.ProcessPoolExecutor`
(spawned processes), which surfaces a dead worker as ``BrokenProcessPool`` instead of
waiting for it forever. The pool is then recreated; when several jobs were in flight,
they are re-run one at a time so that the job that kills its worker is known, and only
that job is reported (through ``on_crash``).
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

Job = TypeVar("Job")

def native_failure(exc: BaseException) -> bool:
    """An exception a native library (dlib, a decoder) may have raised after damaging the process's
    memory: dlib's C++ errors arrive as RuntimeError. Its worker should not be trusted with more files."""
    return isinstance(exc, (RuntimeError, SystemError, MemoryError))


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (dlib's errors span a dozen lines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


CRASH_MESSAGE = ("the worker process died on this file (a native crash in a decoder or the face detector); "
                 "the file was skipped")


def imap_isolated(fn: Callable[[Job], Any], jobs: Iterable[Job], *, workers: int = 1,
                  initializer: Callable[..., None] | None = None, initargs: tuple = (),
                  on_crash: Callable[[Job], Any], suspect: Callable[[Any], bool] | None = None) -> Iterator[Any]:
    """``fn(job)`` for every job, in worker processes, yielding results as they finish (in order
    with one worker); a job whose worker dies yields ``on_crash(job)`` instead. ``fn``, the jobs
    and the initializer must be picklable (module-level functions). ``suspect(result)``: True
    when the worker may be damaged although it lived (a native library raised after writing
    out of bounds): the pool is replaced once the jobs in flight are done."""
    workers = max(1, int(workers))
    queue: deque = deque(jobs)
    suspects: deque = deque()  # jobs in flight when a worker died: re-run alone
    inflight: dict[Future, Any] = {}

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=initializer, initargs=initargs)

    pool = new_pool()
    try:
        while queue or suspects or inflight:
            limit = 1 if suspects else workers  # no queue: with one worker, a suspect one never gets another job
            while len(inflight) < limit and (suspects or queue) and not (suspects and inflight):
                job = suspects.popleft() if suspects else queue.popleft()
                inflight[pool.submit(fn, job)] = job
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken, damaged = [], False
            for fut in sorted(done, key=list(inflight).index):  # submission order
                job = inflight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                damaged = damaged or bool(suspect and suspect(result))
                yield result
            if not (broken or damaged):
                continue
            for fut, job in list(inflight.items()):  # the others finished before the death, or died with it
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken.append(job)
            inflight.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            pool = new_pool()
            if len(broken) == 1:
                yield on_crash(broken[0])
            elif broken:
                suspects.extend(broken)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
