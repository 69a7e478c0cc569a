"""faceage models: the bundled models, by name, with their size and headline accuracy."""
from __future__ import annotations

import argparse
import json

HELP = "list the bundled models (names for --model and AgeEstimator(name))"
EPILOG = """examples:
  faceage models
  faceage models --json
  faceage predict photo.jpg --model fast

Each model's record (architecture, input size, preprocessing) is read from its own file; the accuracy
figures are its model card's (docs/model_card.md), with the command that measures them."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per model")


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
            "headline": dict(entry.headline), "measured_by": entry.measured_by}


def run(args: argparse.Namespace) -> int:
    from faceage.models import list_models

    rows = [describe(name) for name in list_models()]
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
        if r["age_checks"]:
            print(f"  age-check policies: over {', '.join(map(str, r['age_checks']))}")
    return 0
