"""A decoded uint8 image cache at the training resolution (the network input, made by
:func:`faceage.core.preprocess.resize_crop`, the function inference uses).

Decoding JPEGs every step starves a small CPU, so each data set is decoded once
into an (N, S, S, 3) uint8 array on disk, keyed by the files' contents and S,
and memory-mapped by every later run. Unreadable images are reported and
left out, never a crash mid-epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceage.data.manifest import Sample
from faceage.errors import FaceageError, ManifestError
from faceage.core.preprocess import resize_crop


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEAGE_CACHE", Path.home() / ".cache" / "faceage"))


def _decode(job: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    from faceage.core.imageio import load_image

    path, size = job
    try:
        return resize_crop(load_image(path), size), None
    except FaceageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: {exc}"


def _key(samples: list[Sample], size: int) -> str:
    h = hashlib.sha1(f"faceage-cache-v1:{size}".encode())
    for s in samples:
        with open(s.path, "rb") as fh:
            h.update(hashlib.sha1(fh.read()).digest())
    return h.hexdigest()[:20]


@dataclass
class ImageCache:
    images: np.ndarray  # (n, S, S, 3) uint8, memory-mapped
    index: np.ndarray  # positions in the sample list that decoded fine
    problems: list[str]
    key: str  # a digest of the files' contents, in order, and S: names the cache


def build_cache(
    samples: list[Sample], size: int, cache_dir: str | Path | None = None, workers: int | None = None,
    quiet: bool = False,
) -> ImageCache:
    """Decode ``samples`` at ``size`` once; later calls with the same files reuse the result."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _key(samples, size)
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if npy.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return ImageCache(np.load(npy, mmap_mode="r"), np.asarray(info["index"], dtype=np.int64), info["problems"],
                          key)

    tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), size, size, 3))
    ok: list[int] = []
    problems: list[str] = []
    jobs = [(str(s.path), size) for s in samples]
    workers = workers or min(4, os.cpu_count() or 1)
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"decoding to {size}px cache", unit="img", disable=quiet)
    pool = get_context("spawn").Pool(workers) if workers > 1 and len(jobs) > 500 else None
    try:
        results = pool.imap(_decode, jobs, chunksize=64) if pool else map(_decode, jobs)
        for i, (img, err) in enumerate(results):
            if img is None:
                problems.append(err or f"{jobs[i][0]}: unreadable")
            else:
                out[len(ok)] = img
                ok.append(i)
            bar.update()
    finally:
        bar.close()
        if pool:
            pool.close()
    if not ok:
        raise ManifestError(f"no readable image among {len(samples)}; first problems: {problems[:3]}")
    out.flush()
    del out
    # shrink to the readable rows, then publish atomically
    full = np.load(tmp, mmap_mode="r")[: len(ok)]
    np.save(npy.with_suffix(".part.npy"), full)
    os.replace(npy.with_suffix(".part.npy"), npy)
    tmp.unlink(missing_ok=True)
    meta.write_text(json.dumps({"index": ok, "problems": problems, "size": size, "n": len(samples)}))
    if not quiet:
        dt = time.perf_counter() - start
        print(f"cache: {len(ok)}/{len(samples)} images decoded in {dt:.1f}s ({len(samples) / dt:.0f} img/s) -> {npy}")
        for p in problems[:20]:
            print(f"  skipped: {p}")
    return ImageCache(np.load(npy, mmap_mode="r"), np.asarray(ok, dtype=np.int64), problems, key)
