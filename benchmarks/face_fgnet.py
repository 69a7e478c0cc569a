"""Face pipeline vs FG-NET's hand-marked landmarks.

Reports detection rate, eye-centre error normalised by the true inter-ocular
distance (median, p95), eye-line angle error after alignment (median, max) and
speed. FG-NET's own 68-point layout: the eye on the image's left is the mean of
points 27..30 (0-based), the other the mean of 32..35.

    python -m benchmarks.face_fgnet                      # all 1,002 images
    python -m benchmarks.face_fgnet --limit 200 --out /tmp/bench
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from benchmarks._common import add_output_arguments, parse_args

from faceage.cli import detector_option
from faceage.face.align import CropSpec, alignment_matrix, eye_angle
from faceage.face.pipeline import FacePipeline
from faceage.core.imageio import load_image

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fgnet"


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().split("{", 1)[1].split("}", 1)[0].split()
    return np.array([float(v) for v in lines], dtype=np.float64).reshape(-1, 2)


def true_eyes(pts: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    a, b = pts[27:31].mean(axis=0), pts[32:36].mean(axis=0)
    if a[0] > b[0]:
        a, b = b, a
    return (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FG-NET folder with images/ and points/")
    add_output_arguments(ap)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    ap.add_argument("--every", type=int, default=1, help="take every N-th image")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE", type=detector_option,
                    help="a detector option, VALUE as JSON (repeatable), as for faceage predict")
    ap.add_argument("--no-recover", action="store_true", help="HOG first pass only (baseline)")
    ap.add_argument("--plot", action="store_true", help="also write an error histogram PNG")
    args = parse_args(ap, argv)

    images = sorted((args.data / "images").iterdir())
    pts_files = {p.stem.lower(): p for p in (args.data / "points").iterdir()}
    images = images[:: args.every]
    if args.limit:
        images = images[: args.limit]
    opts = {**dict(args.detector_option), **({"recover": False} if args.no_recover else {})}
    spec = CropSpec()
    pipe = FacePipeline(args.detector, spec, **opts)

    rows, missed, wrong = [], [], []
    t_decode = t_detect = 0.0
    passes: dict[str, int] = {}
    t0 = time.perf_counter()
    for path in images:
        gt = true_eyes(read_pts(pts_files[path.stem.lower()]))
        iod = math.dist(*gt)
        t1 = time.perf_counter()
        img = load_image(path)
        t2 = time.perf_counter()
        faces = pipe.faces(img, largest=True)
        t3 = time.perf_counter()
        t_decode += t2 - t1
        t_detect += t3 - t2
        if not faces:
            missed.append(path.name)
            continue
        f = faces[0]
        passes[f.detector] = passes.get(f.detector, 0) + 1
        err = max(math.dist(f.eyes[0], gt[0]), math.dist(f.eyes[1], gt[1])) / iod
        err_mean = (math.dist(f.eyes[0], gt[0]) + math.dist(f.eyes[1], gt[1])) / 2 / iod
        m = alignment_matrix(f.eyes, spec)
        g = [m @ np.array([x, y, 1.0]) for x, y in gt]
        angle = abs(eye_angle(((g[0][0], g[0][1]), (g[1][0], g[1][1]))))
        rows.append({"file": path.name, "eye_err": err_mean, "eye_err_max": err, "angle_err": angle,
                     "detector": f.detector, "true_angle": eye_angle(gt)})
        if err > 0.5:
            wrong.append(path.name)
    total = time.perf_counter() - t0

    n = len(images)
    e = np.array([r["eye_err"] for r in rows]) if rows else np.array([np.nan])
    a = np.array([r["angle_err"] for r in rows]) if rows else np.array([np.nan])
    result = {
        "images": n,
        "detected": len(rows),
        "detection_rate": len(rows) / n if n else 0.0,
        "eye_error_median": float(np.median(e)),
        "eye_error_p95": float(np.percentile(e, 95)),
        "eye_error_max": float(np.max(e)),
        "angle_error_median_deg": float(np.median(a)),
        "angle_error_max_deg": float(np.max(a)),
        "wrong_face_(eye_err>0.5)": wrong,
        "missed": missed,
        "passes": dict(sorted(passes.items(), key=lambda kv: -kv[1])),
        "seconds_total": total,
        "seconds_decode": t_decode,
        "seconds_detect_align": t_detect,
        "files_per_s": n / total if total else 0.0,
        "ms_per_image_detect_align": 1000 * t_detect / n if n else 0.0,
        "crop_spec": spec.to_dict(),
        "detector": args.detector + (" (no recovery)" if args.no_recover else ""),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "command": "python -m benchmarks.face_fgnet " + " ".join(argv if argv is not None else sys.argv[1:]),
        "targets": {"detection_rate": ">= 0.99", "eye_error_median": "<= 0.03", "eye_error_p95": "<= 0.06",
                    "angle_error_median_deg": "<= 2"},
        "eye_error_definition": "mean over both eyes of |detected - true eye centre| / true inter-ocular distance",
    }
    md = [
        "# Face pipeline on FG-NET (hand-marked eye centres)",
        "",
        f"Command: `{result['command'].strip()}`  ",
        f"Detector: {result['detector']}; crop spec {spec.to_dict()}; {result['machine']}",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| detection | {len(rows)}/{n} ({100 * result['detection_rate']:.1f}%) | >= 99% |",
        f"| eye-centre error, median (IOD) | {result['eye_error_median']:.4f} | <= 0.03 |",
        f"| eye-centre error, p95 (IOD) | {result['eye_error_p95']:.4f} | <= 0.06 |",
        f"| eye-centre error, max (IOD) | {result['eye_error_max']:.4f} | |",
        f"| eye-line angle error after alignment, median | {result['angle_error_median_deg']:.2f} deg | <= 2 deg |",
        f"| eye-line angle error after alignment, max | {result['angle_error_max_deg']:.2f} deg | |",
        f"| wrong face (eye error > 0.5 IOD) | {len(wrong)} | |",
        f"| time | {total:.1f} s ({result['files_per_s']:.1f} files/s; detect+align {result['ms_per_image_detect_align']:.1f} ms/image) | |",
        "",
        "Passes that found the face: " + ", ".join(f"{k} {v}" for k, v in result["passes"].items()),
        "",
        "Missed: " + (", ".join(missed) if missed else "none"),
        "",
    ]
    text = "\n".join(md)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face_fgnet.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "face_fgnet.md").write_text(text)
    if args.plot and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(np.clip(e, 0, 0.2), bins=40)
        ax.set_xlabel("eye-centre error / inter-ocular distance")
        ax.set_ylabel("images")
        fig.tight_layout()
        fig.savefig(args.out / "face_fgnet.png", dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
