"""Batch inference throughput: local worker processes vs Ray Data, 1 and 2 workers.

Images: the first N/2 FG-NET photos (uncropped portraits) and the first N/2 UTKFace
chips, whole pipeline (decode, detect, align, two views through the bundled ONNX
model), Parquet written. Each figure is images / wall time of a complete run, worker
start and model loading included (Ray's own start-up, ``ray.init``, excluded). Ray gets
one logical CPU more than its actors for its read and write tasks. Bars from issue #17:
2 workers >= 1.7x one worker, Ray Data within 15% of local mode at the same count.

    python -m benchmarks.batch_throughput                    # 2,000 images, writes docs/benchmarks/
    python -m benchmarks.batch_throughput --n 100 --out /tmp/bench
    python -m benchmarks.batch_throughput --n 60 --faceless 0.3 --no-ray --write   # 30% without a face
    python -m benchmarks.batch_throughput --make-faceless work/faceless    # one of each, + a 7000x7000 PNG

``--faceless F``: that fraction of the collection is photos without a face, made here
(seeded) in a temporary folder, in turn: a blank 1000x750 PNG, a 12 MP JPEG of noise,
synthetic landscapes (sky, ridges, textured ground; 12 MP and 3 MP JPEGs) and a 1600x1200
noise PNG. Real collections are full of such photos, and they take the face front end's
slowest path (every recovery pass); results go to ``batch_throughput_faceless.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._common import SHARED_DATA, add_output_arguments, machine, markdown_table, parse_args, write_results

from faceage.batch import run_batch
from faceage.batch.output import read_rows


def images(n: int) -> list[str]:
    fgnet = sorted((SHARED_DATA / "fgnet" / "images").iterdir())[: n // 2]
    utk = sorted((SHARED_DATA / "utkface").glob("*.jpg"))[: n - len(fgnet)]
    if len(fgnet) + len(utk) < n:
        raise SystemExit(f"need {n} images under {SHARED_DATA}/fgnet/images and utkface, found {len(fgnet) + len(utk)}")
    return [str(p) for p in fgnet + utk]


def landscape(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Sky gradient, two ridges of random-walk mountains and a textured ground: no face."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (np.array([70, 120, 200], np.float32) * (1 - y) + np.array([200, 220, 235], np.float32) * y)
    img = np.repeat(img, w, axis=1)
    cols = np.arange(w)
    for base, colour in ((0.45, (90, 100, 120)), (0.6, (60, 90, 60))):
        ridge = base * h + np.cumsum(rng.normal(0, h / 400, w)) + (h / 12) * np.sin(cols / w * rng.uniform(2, 9))
        below = np.arange(h)[:, None] > ridge[None, :]
        img[below] = colour
    noise = np.asarray(Image.fromarray(rng.integers(0, 255, (h // 4, w // 4), dtype=np.uint8)).resize((w, h)))
    img += (noise[..., None].astype(np.float32) - 128) * 0.15
    return np.clip(img, 0, 255).astype(np.uint8)


def faceless(n: int, folder: Path, seed: int = 25) -> list[str]:
    """``n`` face-less photos (see the module docstring) written into ``folder``."""
    rng = np.random.default_rng(seed)
    makers = [
        ("blank.png", lambda: np.full((750, 1000, 3), 128, np.uint8)),
        ("noise-12mp.jpg", lambda: rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)),
        ("landscape-12mp.jpg", lambda: landscape(rng, 4000, 3000)),
        ("landscape-3mp.jpg", lambda: landscape(rng, 2000, 1500)),
        ("noise.png", lambda: rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)),
    ]
    out = []
    for i in range(n):
        name, make = makers[i % len(makers)]
        path = folder / f"{i:04d}-{name}"
        Image.fromarray(make()).save(path, **({"quality": 90} if name.endswith(".jpg") else {}))
        out.append(str(path))
    return out


def run_local(paths: list[str], workers: int, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    run_batch(paths, out, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, {(r["path"], r["face"]): r["age"] for r in read_rows(out)}


def run_ray(ray, paths: list[str], workers: int, out: Path) -> tuple[float, dict]:
    from faceage.integrations.ray import predict_dataset

    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": p} for p in paths])
    predict_dataset(ds, concurrency=workers).write_parquet(str(out))
    seconds = time.perf_counter() - t0
    rows = ray.data.read_parquet(str(out)).take_all()
    return seconds, {(r["path"], r["face"]): r["age"] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images (half FG-NET, half UTKFace)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-ray", action="store_true", help="local mode only")
    ap.add_argument("--faceless", type=float, default=0.0, help="fraction of face-less photos (made here)")
    ap.add_argument("--make-faceless", type=Path, metavar="DIR", help="only write one of each face-less photo to DIR")
    add_output_arguments(ap)
    args = parse_args(ap)
    if args.make_faceless:
        args.make_faceless.mkdir(parents=True, exist_ok=True)
        print("\n".join(faceless(5, args.make_faceless)))
        big = args.make_faceless / "one-colour-7000.png"  # 160 KB, 49 MP decoded: the memory case
        Image.new("RGB", (7000, 7000), (90, 140, 200)).save(big, optimize=True)
        print(big)
        return
    if not 0.0 <= args.faceless < 1.0:
        ap.error("--faceless is a fraction, 0 <= F < 1")
    n_faceless = round(args.n * args.faceless)
    paths = images(args.n - n_faceless)
    load_before = os.getloadavg()
    results, ages = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        if n_faceless:
            (Path(tmp) / "faceless").mkdir()
            made = faceless(n_faceless, Path(tmp) / "faceless")
            step = len(paths) / n_faceless  # spread through the collection
            for i, p in enumerate(made):
                paths.insert(round(i * step) + i, p)
        for w in args.workers:
            seconds, ages[("local", w)] = run_local(paths, w, Path(tmp) / f"local-{w}.parquet")
            results.append({"mode": "local", "workers": w, "seconds": round(seconds, 2),
                            "images_per_s": round(len(paths) / seconds, 2)})
            print(results[-1], flush=True)
        if not args.no_ray:
            import ray

            ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            for w in args.workers:
                seconds, ages[("ray", w)] = run_ray(ray, paths, w, Path(tmp) / f"ray-{w}")
                results.append({"mode": "ray", "workers": w, "seconds": round(seconds, 2),
                                "images_per_s": round(len(paths) / seconds, 2)})
                print(results[-1], flush=True)
            ray.shutdown()
    reference = ages[("local", args.workers[0])]
    same = all(a == reference for a in ages.values())
    rate = {(r["mode"], r["workers"]): r["images_per_s"] for r in results}
    rows = []
    for r in results:
        one = rate[(r["mode"], args.workers[0])]
        local = rate[("local", r["workers"])]
        rows.append([r["mode"], r["workers"], r["seconds"], r["images_per_s"], f"{r['images_per_s'] / one:.2f}x",
                     f"{r['images_per_s'] / local:.2f}"])
    header = ["mode", "workers", "seconds", "images/s", f"vs {args.workers[0]} worker", "vs local"]
    load_after = os.getloadavg()
    with_face = args.n - n_faceless
    table = (markdown_table(header, rows) + f"\n\n{len(paths)} images ({with_face // 2} FG-NET + "
             f"{with_face - with_face // 2} UTKFace" + (f" + {n_faceless} without a face: blank, noise, landscapes, "
                                                         "0.75-12 MP" if n_faceless else "") +
             f"), {machine()}; load average before {load_before[0]:.2f}, "
             f"after {load_after[0]:.2f}; same ages in every run: {same}\n\n"
             f"Command: `python -m benchmarks.batch_throughput {' '.join(sys.argv[1:])}`")
    data = {"images": len(paths), "faceless": n_faceless, "machine": machine(),
            "cpus_available": len(os.sched_getaffinity(0)), "command": sys.argv[1:],
            "load_average_before": load_before, "load_average_after": load_after, "same_ages": same,
            "results": results}
    write_results("batch_throughput_faceless" if n_faceless else "batch_throughput", data, table, out=args.out)


if __name__ == "__main__":
    main()
