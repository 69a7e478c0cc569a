"""Batch inference throughput: local worker processes vs Ray Data, 1 and 2 workers.

Images: the first N/2 FG-NET photos (uncropped portraits) and the first N/2 UTKFace
chips, whole pipeline (decode, detect, align, two views through the bundled ONNX
model), Parquet written. Each figure is images / wall time of a complete run, worker
start and model loading included (Ray's own start-up, ``ray.init``, excluded). Ray gets
one logical CPU more than its actors for its read and write tasks. Bars from issue #17:
2 workers >= 1.7x one worker, Ray Data within 15% of local mode at the same count.

    python benchmarks/batch_throughput.py                    # 2,000 images, writes docs/benchmarks/
    python benchmarks/batch_throughput.py --n 100 --out /tmp/bench
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA, add_output_arguments, machine, markdown_table, parse_args, write_results

from faceage.batch import run_batch
from faceage.batch.output import read_rows


def images(n: int) -> list[str]:
    fgnet = sorted((SHARED_DATA / "fgnet" / "images").iterdir())[: n // 2]
    utk = sorted((SHARED_DATA / "utkface").glob("*.jpg"))[: n - len(fgnet)]
    if len(fgnet) + len(utk) < n:
        raise SystemExit(f"need {n} images under {SHARED_DATA}/fgnet/images and utkface, found {len(fgnet) + len(utk)}")
    return [str(p) for p in fgnet + utk]


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
    add_output_arguments(ap)
    args = parse_args(ap)
    paths = images(args.n)
    load_before = os.getloadavg()
    results, ages = [], {}
    with tempfile.TemporaryDirectory() as tmp:
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
    table = (markdown_table(header, rows) + f"\n\n{len(paths)} images ({args.n // 2} FG-NET + "
             f"{len(paths) - args.n // 2} UTKFace), {machine()}; load average before {load_before[0]:.2f}, "
             f"after {load_after[0]:.2f}; same ages in every run: {same}")
    data = {"images": len(paths), "machine": machine(), "cpus_available": len(os.sched_getaffinity(0)),
            "load_average_before": load_before, "load_average_after": load_after, "same_ages": same,
            "results": results}
    write_results("batch_throughput", data, table, out=args.out)


if __name__ == "__main__":
    main()
