"""Write tests/data/golden.json: each bundled model's faces, ages and "over 18" age-check decisions on the
committed public-domain photos, on both backends (``{"default": name, "models": {name: {"model", "faces",
"checks"}}}``).

Run it after an intended change of a bundled model or of the face front end, look at the diff, and
commit it with the change; tests/test_golden.py then pins every later change against it.
    python -m scripts.golden            # prints what differs from the committed file
    python -m scripts.golden --write    # rewrites tests/data/golden.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from faceage import AgeEstimator
from faceage.models import DEFAULT, list_models, locate

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
PHOTOS = ("obama.jpg", "biden.jpg", "obama_and_biden.jpg")


def model_digest(model: str, backend: str) -> str:
    return hashlib.sha256(locate(model, backend).read_bytes()).hexdigest()[:16]


def golden(model: str, backend: str) -> dict:
    est = AgeEstimator(model, backend=backend)
    return {name: [{"box": list(f.box), "age": f.age, "age_interval": list(f.age_interval)}
                   for f in est.predict(DATA / name)] for name in PHOTOS}


def checks(model: str, over: int = 18) -> dict:
    """``faceage check --over 18`` per photo: each face's decision and calibrated p_over (ONNX model)."""
    est = AgeEstimator(model)
    return {name: [{"box": list(c.box), "p_over": round(c.p_over, 4), "decision": c.decision}
                   for c in est.check(DATA / name, over)] for name in PHOTOS}


def model_golden(model: str) -> dict:
    return {"model": {b: model_digest(model, b) for b in ("onnx", "torch")},
            "faces": {b: golden(model, b) for b in ("onnx", "torch")},
            "checks": {"18": checks(model, 18)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite tests/data/golden.json (a tracked file)")
    args = ap.parse_args(argv)
    out = {"default": DEFAULT, "models": {m: model_golden(m) for m in list_models()}}
    for model, entry in out["models"].items():
        for name, faces in entry["faces"]["onnx"].items():
            print(model, name, [(f["box"], f["age"]) for f in faces])
    same = json.loads((DATA / "golden.json").read_text()) == out
    if args.write:
        (DATA / "golden.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {DATA / 'golden.json'}")
    else:
        print("the committed golden.json holds these values" if same else
              "differs from the committed golden.json; rerun with --write after checking the change is intended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
