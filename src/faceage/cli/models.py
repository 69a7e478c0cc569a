"""faceage models: the bundled models, by name, with their size and headline accuracy."""
from __future__ import annotations

import argparse
import json

HELP = "list the bundled models (names for --model and AgeEstimator(name))"
EPILOG = """examples:
  faceage models
  faceage models --json
  faceage models --time        # also time one face of each model on this machine
  faceage models --info accurate         # one model file in full: record, policies, integrity
  faceage models --info runs/x/best.safetensors --json
  faceage predict photo.jpg --model fast

Each model's record (architecture, input size, preprocessing) is read from its own file; the accuracy
figures are its model card's (docs/model_card.md), with the command that measures them, and the time per
face is the network alone (after the face is found and aligned) on the project's 2-core machine: ONNX
Runtime, one thread, batch 1, the median of benchmarks/speed.py.

--info loads the model as predict would (every check included: a damaged or edited file is exit 4,
bad_model_file) and prints its record, its age-check policies, whether its digests were verified (or
the bundled file's pinned sha256), and what is valid but extreme (a policy passing below even odds,
an extreme calibration, a policy fitted on few faces, a strong prior correction)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.add_argument("--time", action="store_true", help="also time one face of each model here (ONNX Runtime, one "
                                                       "thread, batch 1: the fastest of 5 rounds' medians of 30 "
                                                       "runs; a few seconds)")
    p.add_argument("--info", metavar="MODEL", default=None,
                   help="one model (a bundled name, file or run folder) in full: record, age-check policies, "
                        "integrity, warnings")


def info(model: str) -> dict:
    """A model file as plain data, loaded with every check; ``integrity``: pinned (a bundled file matching its
    released sha256), verified (its digests), or absent (written before faceage wrote digests)."""
    from faceage.models.digest import pinned_digest, verify
    from faceage.models import locate
    from faceage.runtime import load_backend
    from faceage.models.weights import read_metadata

    path = locate(model)
    backend = load_backend(path)  # every check, the digests' included
    rec = backend.record
    meta = (backend.session.get_modelmeta().custom_metadata_map if path.suffix == ".onnx"
            else read_metadata(path))
    integrity = "pinned" if pinned_digest(path) else verify(path, meta, None)
    return {"path": str(path), "integrity": integrity, "arch": rec.model.name, "input_size": rec.input_size,
            "crop": rec.crop and rec.crop.to_dict(), "mean": list(rec.mean), "std": list(rec.std),
            "estimate": rec.estimate, "scoring": rec.scoring.to_dict(),
            "interval_temperature": rec.interval_temperature,
            "logit_bias_max": None if rec.logit_bias is None else max(map(abs, rec.logit_bias)),
            "age_checks": {str(k): p.summary() | {"validation_band": p.validation.get("band")}
                           for k, p in rec.age_checks.items()},
            "training": {k: v for k, v in rec.training.items() if not isinstance(v, (dict, list))},
            "warnings": rec.warnings()}


INTEGRITY = {"pinned": "a bundled file: matches the sha256 it was released with",
             "verified": "record and weights match their digests",
             "absent": "no digests (written before faceage wrote them): damage or edits cannot be detected"}


def _print_info(d: dict) -> None:
    print(f"{d['path']}\n  integrity: {INTEGRITY[d['integrity']]}")
    print(f"  {d['arch']} at {d['input_size']} px; crop {d['crop']}; mean {d['mean']}, std {d['std']}")
    bias = "none" if d["logit_bias_max"] is None else f"up to {d['logit_bias_max']:.3g}"
    print(f"  estimate {d['estimate']}, views {d['scoring']['tta']}, interval temperature "
          f"{d['interval_temperature']:g}, prior correction {bias}")
    for over, p in d["age_checks"].items():
        band = p["validation_band"] or {}
        shown = (f"; in validation {band['passed']} of {band['n']} aged {p['band'][0]}-{p['band'][1]} passed"
                 if band.get("n") is not None else "")
        print(f"  over {over}: pass if p_over >= {p['threshold']:.4f} ({p['calibration']} calibration){shown}")
    for w in d["warnings"]:
        print(f"  warning: {w}")


def describe(name: str) -> dict:
    """One bundled model as plain data: name, files, architecture and input, size, headline accuracy."""
    from faceage.models import DEFAULT, MODELS
    from faceage.models.weights import read_record

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

    if args.info is not None:
        d = info(args.info)
        if args.json:
            print(json.dumps(d))
        else:
            _print_info(d)
        return 0

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
