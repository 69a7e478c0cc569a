"""Where the time goes: each stage of the whole pipeline, per photo class, for the bundled models (issue 31).

    python -m benchmarks.profile                     # prints the table; JSON and Markdown in a temporary folder
    python -m benchmarks.profile --write             # -> docs/benchmarks/profile.{json,md}
    python -m benchmarks.profile --n 5 --classes crops portraits --models fast   # a quick look

Photo classes: UTKFace 200-px face crops and FG-NET portraits (``../shared/data``), 12 MP
photos of one face and 12 MP group photos of 15-20 faces (``scripts/large_photos.py``,
built into ``work/`` when missing); plus crop-to-age (``predict_aligned`` on the 200-px crops).
Everything runs in this process on one thread (ONNX Runtime, ``FACEAGE_THREADS=1``; dlib is
single-threaded), from the file, the first ``--warmup`` photos excluded.

The stages are timed by wrapping the functions that do them (faceage's code is not changed):

* decode: the face pipeline's image decoding (reduced-scale JPEG decode, sharper re-decode for crops);
* enlarge: the pipeline's enlargement of a reduced decode to the detector's working size;
* detection: the face detector (its downscale, MTCNN and HOG passes) without its landmark calls;
* landmarks: dlib's 5-point shape predictor, per face;
* align: the similarity warp that makes each crop;
* preprocess: the crops' checks, resize to the network input and batching;
* network: the backend's run (ONNX Runtime);
* scoring: test-time views, prior correction, softmax, age and interval (``score`` less the network);
* other: the rest of the call (options, result objects, sorting).

The report names the CPU and its vector extensions (AVX2, AVX-512), which decide the network's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("FACEAGE_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from benchmarks._common import REPO, SHARED_DATA, add_output_arguments, markdown_table, parse_args, write_results  # noqa: E402

STAGES = ("decode", "enlarge", "detection", "landmarks", "align", "preprocess", "network", "scoring", "other")
CLASSES = ("crops", "portraits", "12mp-one", "12mp-group")
LARGE, GROUPS = REPO / "work" / "large-photos", REPO / "work" / "group-photos"


class Stages:
    """Seconds spent inside wrapped functions, by name (re-entrant calls counted once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, owner, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            self._depth[name] = self._depth.get(name, 0) + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth[name] -= 1
                if not self._depth[name]:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)

    @contextmanager
    def call(self):
        """One measured call: yields a dict that holds the stages' milliseconds when the block ends."""
        self.seconds = {}
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        yield out
        total = time.perf_counter() - t0
        s = self.seconds
        parts = {"decode": s.get("decode", 0.0), "enlarge": s.get("pipeline_detect", 0.0) - s.get("detect", 0.0),
                 "detection": s.get("detect", 0.0) - s.get("landmarks", 0.0), "landmarks": s.get("landmarks", 0.0),
                 "align": s.get("align", 0.0), "preprocess": s.get("preprocess", 0.0),
                 "network": s.get("network", 0.0), "scoring": s.get("score", 0.0) - s.get("network", 0.0)}
        parts["other"] = total - sum(parts.values())
        out.update({k: 1000 * v for k, v in parts.items()}, total=1000 * total)


TIMERS = Stages()  # one for the process: the module-level wrappers are installed once and report here


def instrument(est, stages: Stages = TIMERS) -> None:
    """Wrap the stage functions (in the modules ``est`` calls them through) once, and ``est``'s network."""
    import faceage.estimator as estimator
    import faceage.face.dlib_detector as dlib_detector
    import faceage.face.mtcnn_detector as mtcnn_detector
    import faceage.face.pipeline as pipeline

    if not getattr(instrument, "done", False):
        for owner, attr, name in ((pipeline, "load_image_scaled", "decode"), (pipeline, "load_image", "decode"),
                                  (pipeline.FacePipeline, "_detect", "pipeline_detect"), (pipeline, "align", "align"),
                                  (dlib_detector.DlibDetector, "detect", "detect"),
                                  (mtcnn_detector.MtcnnDetector, "detect", "detect"),
                                  (dlib_detector, "landmark_eyes", "landmarks"),
                                  (estimator, "input_batch", "preprocess"), (estimator, "load_image", "preprocess"),
                                  (estimator, "score", "score")):
            stages.wrap(owner, attr, name)
        instrument.done = True
    stages.wrap(est.backend, "run", "network")


def photo_sets(args) -> dict[str, list[Path]]:
    """The photos of each class asked for."""
    from scripts import large_photos
    utk = sorted((SHARED_DATA / "utkface").glob("*.jpg"))[:: max(1, 20_000 // max(args.n, 1))][: args.n]
    sets = {"crops": utk,
            "portraits": sorted(p for p in (SHARED_DATA / "fgnet").rglob("*") if p.suffix.lower() == ".jpg")[: args.n]}
    if "12mp-one" in args.classes:
        if not (LARGE / "photos.json").is_file():
            large_photos.build(LARGE, seed=14)
        listed = json.loads((LARGE / "photos.json").read_text())["photos"]
        sets["12mp-one"] = [LARGE / p["file"] for p in listed if not p["pasted"]][: args.n]
    if "12mp-group" in args.classes:
        listed = json.loads((GROUPS / "photos.json").read_text())["photos"] if (GROUPS / "photos.json").is_file() \
            else large_photos.build_groups(GROUPS, seed=23, n=max(args.n, 4))
        sets["12mp-group"] = [GROUPS / p["file"] for p in listed][: args.n]
    return {k: v for k, v in sets.items() if k in args.classes and v}


def cpu() -> dict:
    """The CPU's name and the vector extensions the network kernels use."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"name": "unknown", "flags": []}
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")
    return {"name": name, "flags": [f for f in wanted if f in flags], "cpus": os.cpu_count()}


def profile(model: str, sets: dict[str, list[Path]], warmup: int) -> list[dict]:
    from faceage import AgeEstimator
    from faceage.core.imageio import load_image

    est = AgeEstimator(model)
    stages = TIMERS
    instrument(est, stages)
    rows = []
    jobs = [(name, est.predict, paths) for name, paths in sets.items()]
    if "crops" in sets:
        crops = [load_image(p) for p in sets["crops"]]
        jobs.append(("crop-to-age", est.predict_aligned, crops))
    for name, fn, inputs in jobs:
        skip = min(warmup, max(0, len(inputs) - 2))  # a class of 3 large photos keeps 2 measured
        for x in inputs[:skip]:
            fn(x)
        calls, faces = [], 0
        for x in inputs[skip:]:
            with stages.call() as ms:
                out = fn(x)
            calls.append(ms)
            faces += len(out)
        mean = {k: statistics.fmean(c[k] for c in calls) for k in (*STAGES, "total")}
        rows.append({"model": model, "class": name, "photos": len(calls), "faces_per_photo": round(faces / len(calls), 2),
                     "median_total_ms": round(statistics.median(c["total"] for c in calls), 2),
                     "mean_ms": {k: round(v, 2) for k, v in mean.items()}})
        print(f"{model:9s} {name:12s} {rows[-1]['median_total_ms']:8.1f} ms", file=sys.stderr, flush=True)
    return rows


def markdown(res: dict) -> str:
    head = ["model", "photo class", "photos", "faces", "median ms", *[f"{s} (mean ms)" for s in STAGES]]
    rows = [[r["model"], r["class"], r["photos"], r["faces_per_photo"], r["median_total_ms"],
             *[f"{r['mean_ms'][s]:.2f}" for s in STAGES]] for r in res["rows"]]
    c = res["cpu"]
    return (f"# Where the time goes\n\n`{res['command']}`; {c['name']}, {c['cpus']} CPUs, flags "
            f"{', '.join(c['flags']) or 'none'}; one thread; {res['note']}\n\n" + markdown_table(head, rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["fast", "accurate"], help="bundled names or model files")
    ap.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    ap.add_argument("--n", type=int, default=40, help="photos per class (default 40; 12 MP classes: as many as built)")
    ap.add_argument("--warmup", type=int, default=2, help="photos per class run first and not counted")
    ap.add_argument("--note", default="quiet machine", help="what else ran on the machine")
    add_output_arguments(ap)
    args = parse_args(ap, argv)
    sets = photo_sets(args)
    if not sets:
        sys.exit(f"no photos found under {SHARED_DATA}")
    res = {"benchmark": "profile", "command": "python -m benchmarks.profile " + " ".join(argv or sys.argv[1:]),
           "cpu": cpu(), "note": args.note, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "rows": [r for m in args.models for r in profile(m, sets, args.warmup)]}
    write_results("profile", res, markdown(res), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
