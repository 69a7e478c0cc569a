"""faceage models: the bundled models, by name, with their size and headline accuracy."""
from __future__ import annotations

import argparse
import json

HELP = "list the bundled models (names for --model and AgeEstimator(name))"
EPILOG = """examples:
  faceage models
  faceage models --json
  faceage models --time        # also time one face of each model on this machine
  faceage predict photo.jpg --model fast

Each model's record (architecture, input size, preprocessing) is read from its own file; the accuracy
figures are its model card's (docs/model_card.md), with the command that measures them, and the time per
face is the network alone (after the face is found and aligned) on the project's 2-core machine: ONNX
Runtime, one thread, batch 1, the median of benchmarks/speed.py."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.add_argument("--time", action="store_true", help="also time one face of each model here (ONNX Runtime, one "
                                                       "thread, batch 1: the fastest of 5 rounds' medians of 30 "
                                                       "runs; a few seconds)")


def describe(name: str) -> dict:
    """One bundled model as plain data: name, files, architecture and input, size, headline accuracy."""
    from faceage.models import DEFAULT, MODELS
    from faceage.weights import read_record

    entry = MODELS[name]
    onnx, weights = entry.file("onnx"), entry.file("torch")
    record = read_record(weights)  # the safetensors header alone; the ONNX file carries the same record (tested)
    return {"name": name, "default": name == DEFAULT, "summary": entry.summary,
            "arch": record.model.name, "input_size": record.input_size,
            "params": record.training.get("params"),
            "files": {p.suffix[1:]: {"path": str(p), "mb": round(p.stat().st_size / 1e6, 2)} for p in (onnx, weights)},
            "age_checks": sorted(int(k) for k in (record.age_checks or {})),
            "headline": dict(entry.headline), "measured_by": entry.measured_by,
            "ms_per_face": entry.ms_per_face, "timed_by": entry.timed_by}


def run(args: argparse.Namespace) -> int:
    from faceage.models import list_models

    rows = [describe(name) for name in list_models()]
    if args.time:
        from faceage.runtime import time_per_face
        from faceage.runtime.onnx_backend import OnnxBackend

        here = time_per_face({r["name"]: OnnxBackend(r["files"]["onnx"]["path"], threads=1) for r in rows})
        for r in rows:
            r["ms_per_face_here"] = here[r["name"]]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for r in rows:
        params = f"{r['params']:,} parameters, " if r["params"] else ""
        sizes = ", ".join(f"{k} {v['mb']} MB" for k, v in r["files"].items())
        print(f"{r['name']}{' (default)' if r['default'] else ''}: {r['summary']}")
        print(f"  {r['arch']} at {r['input_size']} px, {params}{sizes}")
        if r["headline"]:
            print("  " + ", ".join(f"{k} {v:g}" for k, v in r["headline"].items()) + f"  ({r['measured_by']})")
        if r["ms_per_face"] is not None or "ms_per_face_here" in r:
            ref = (f"{r['ms_per_face']:g} ms per face on a 2-core machine ({r['timed_by']})"
                   if r["ms_per_face"] is not None else "")
            here = f"{r['ms_per_face_here']:.2f} ms here" if "ms_per_face_here" in r else ""
            print("  " + "; ".join(x for x in (here, ref) if x))
        if r["age_checks"]:
            print(f"  age-check policies: over {', '.join(map(str, r['age_checks']))}")
    return 0
