"""Per-file work in worker processes that may die: one file's native crash never stops a run.

dlib and the image decoders are C/C++; on a hostile or unlucky file they can abort or
segfault the process (heap corruption on thin images in dlib's CNN pass was one).
:func:`imap_isolated` is the one place where faceage runs work in processes (``predict``,
``predict --output``, ``prepare``): it runs ``fn(job)`` in a
:class:`~concurrent.futures.ProcessPoolExecutor` (spawned processes), which surfaces a dead
worker as ``BrokenProcessPool`` instead of waiting for it forever. The pool is then
recreated; when several jobs were in flight they are re-run one at a time, so the job that
kills its worker is known, and only that job is reported (through ``on_crash``).

Workers never outlive the run: each one asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG`` on Linux; elsewhere a thread polls the parent's pid), so a parent
killed with ``kill -9`` leaves no worker behind.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import count
from typing import Any, Callable, Iterable, Iterator, TypeVar

Job = TypeVar("Job")

#: the error code of a file whose worker process died on it
CRASH_CODE = "worker_crashed"
CRASH_MESSAGE = ("the worker process died on this file (a native crash in a decoder or the face detector); "
                 "the file was skipped")


def native_failure(exc: BaseException) -> bool:
    """An exception a native library (dlib, a decoder) may have raised after damaging the process's
    memory: dlib's C++ errors arrive as RuntimeError. Its worker should not be trusted with more files."""
    return isinstance(exc, (RuntimeError, SystemError, MemoryError))


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (dlib's errors span a dozen lines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def die_with_parent(parent: int) -> None:
    """Make this process end when process ``parent`` ends, however it ends (``kill -9`` included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="faceage-parent-watch").start()


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if initializer is not None:
        initializer(*initargs)


def imap_isolated(fn: Callable[[Job], Any], jobs: Iterable[Job], *, workers: int = 1,
                  initializer: Callable[..., None] | None = None, initargs: tuple = (),
                  on_crash: Callable[[Job], Any], suspect: Callable[[Any], bool] | None = None,
                  window: int = 32) -> Iterator[Any]:
    """``fn(job)`` for every job, in worker processes, yielding the results in the jobs' order; a
    job whose worker dies yields ``on_crash(job)`` instead. ``fn``, the jobs and the initializer
    must be picklable (module-level functions). ``jobs`` is read lazily: at most ``window`` jobs
    per worker are taken ahead of the first result not yet yielded, so memory stays flat on
    millions of jobs; a wide window keeps the other workers busy while one works through a slow file (a
    photo without a face takes every recovery pass): with 4, 2 workers were 1.4x one, with 32 1.8x.
    ``suspect(result)``: True when the worker may be damaged although it lived (a native library raised
    after writing out of bounds): the pool is replaced once the jobs in flight are done."""
    workers = max(1, int(workers))
    source = iter(zip(count(), jobs))
    suspects: deque = deque()  # (index, job) in flight when a worker died: re-run alone
    inflight: dict[Future, tuple[int, Any]] = {}
    ready: dict[int, Any] = {}  # results waiting for an earlier one
    next_out = 0
    exhausted = False

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))

    def take() -> tuple[int, Any] | None:
        nonlocal exhausted
        if suspects:
            return suspects.popleft()
        if exhausted:
            return None
        item = next(source, None)
        exhausted = item is None
        return item

    pool = new_pool()
    highest = -1  # the highest index taken from the source
    try:
        while True:
            limit = 1 if suspects else workers  # one job per worker: none queued behind a result found suspect
            while len(inflight) < limit and not (suspects and inflight):
                if not suspects and highest + 1 >= next_out + window * workers:
                    break  # the window is full: wait for the oldest job
                item = take()
                if item is None:
                    break
                highest = max(highest, item[0])
                inflight[pool.submit(fn, item[1])] = item
            if not inflight:
                break
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken, damaged = [], False
            for fut in done:
                item = inflight.pop(fut)
                try:
                    ready[item[0]] = result = fut.result()
                except BrokenProcessPool:
                    broken.append(item)
                    continue
                damaged = damaged or bool(suspect and suspect(result))
            if broken or damaged:
                for fut, item in list(inflight.items()):  # finished before the death, or died with it
                    try:
                        ready[item[0]] = fut.result()
                    except BrokenProcessPool:
                        broken.append(item)
                inflight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
                if len(broken) == 1:
                    ready[broken[0][0]] = on_crash(broken[0][1])
                else:
                    suspects.extend(sorted(broken, key=lambda item: item[0]))
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
