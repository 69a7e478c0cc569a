"""Fusion on the test video: the fused age vs the per-frame ages, per person.

    python -m benchmarks.video_fusion [--frames 300] [--every 1 5]

On the 720p clip of scripts/make_test_video.py (three FG-NET people, true ages known),
for each person's track: the mean error of its per-frame ages, and the error of one
age for the whole track made by the plain mean and the median of the per-frame ages,
the weighted mixture (``--fusion mixture``: with DEX, the weighted mean of the
per-frame ages) and the weighted log pool (``--fusion logpool``, the default), with
each fused 80% interval's width and whether it holds the true age.
Results: ``docs/benchmarks/video_fusion.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import add_output_arguments, markdown_table, parse_args, write_results



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--every", nargs="+", type=int, default=[1, 5])
    add_output_arguments(ap)
    args = parse_args(ap)

    from scripts.make_test_video import age_errors, make_test_video

    from faceage.estimator import AgeEstimator

    est = AgeEstimator()
    w, h = (int(v) for v in args.size.lower().split("x"))
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        truth = make_test_video(clip, width=w, height=h, frames=args.frames)
        for every in args.every:
            fused = {}
            for method in ("mixture", "logpool"):
                tracks = est.predict_video(clip, every=every, fusion=method).tracks
                fused[method] = {e["person"]: (e, t) for e, t in zip(age_errors(tracks, truth), tracks)}
            for person in sorted(fused["logpool"]):
                e, track = fused["logpool"][person]
                ages = np.asarray(track.scored_ages)
                true = e["true_age"]
                entry = {"every": every, "person": truth["people"][person]["file"], "true_age": true,
                         "frames_scored": e["frames_scored"], "per_frame_sd": round(float(ages.std()), 2),
                         "mean_frame_error": round(e["mean_frame_error"], 2),
                         "plain_mean_error": round(abs(float(ages.mean()) - true), 2),
                         "median_error": round(abs(float(np.median(ages)) - true), 2)}
                for method, (em, tm) in ((m, fused[m][person]) for m in ("mixture", "logpool")):
                    lo, hi = tm.age_interval
                    entry[f"{method}_error"] = round(em["fused_error"], 2)
                    entry[f"{method}_interval"] = [lo, hi]
                    entry[f"{method}_covers"] = bool(lo <= true <= hi)
                results.append(entry)
                rows.append([every, entry["person"], true, entry["frames_scored"], entry["per_frame_sd"],
                             entry["mean_frame_error"], entry["plain_mean_error"], entry["median_error"],
                             entry["mixture_error"], entry["logpool_error"],
                             f"{entry['logpool_interval'][0]:.0f}-{entry['logpool_interval'][1]:.0f}"])
    means = {k: round(float(np.mean([r[k] for r in results])), 2)
             for k in ("mean_frame_error", "plain_mean_error", "median_error", "mixture_error", "logpool_error")}
    table = markdown_table(["every", "person", "true age", "frames scored", "per-frame sd", "mean per-frame error",
                            "plain mean", "median", "mixture", "log pool", "log-pool 80% interval"], rows)
    table += ("\n\nMean over rows: " + ", ".join(f"{k} {v}" for k, v in means.items())
              + f"\n\n{args.size}, {args.frames} frames, scripts/make_test_video.py; errors in years")
    write_results("video_fusion", {"size": args.size, "frames": args.frames, "results": results, "means": means},
                  table, args.out)


if __name__ == "__main__":
    main()
