"""Write tests/data/golden.json: the bundled model's faces, ages and "over 18" age-check decisions on the
committed public-domain photos.

Run it after an intended change of the bundled model or of the face front end, look at the diff, and
commit it with the change; tests/test_golden.py then pins every later change against it.
    python scripts/golden.py
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from faceage import AgeEstimator
from faceage.estimator import default_model_path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
PHOTOS = ("obama.jpg", "biden.jpg", "obama_and_biden.jpg")


def model_digest(backend: str) -> str:
    return hashlib.sha256(default_model_path(backend).read_bytes()).hexdigest()[:16]


def golden(backend: str) -> dict:
    est = AgeEstimator(backend=backend)
    return {name: [{"box": list(f.box), "age": f.age, "age_interval": list(f.age_interval)}
                   for f in est.predict(DATA / name)] for name in PHOTOS}


def checks(over: int = 18) -> dict:
    """``faceage check --over 18`` per photo: each face's decision and calibrated p_over (ONNX model)."""
    est = AgeEstimator()
    return {name: [{"box": list(c.box), "p_over": round(c.p_over, 4), "decision": c.decision}
                   for c in est.check(DATA / name, over)] for name in PHOTOS}


def main() -> None:
    out = {"model": {b: model_digest(b) for b in ("onnx", "torch")},
           "faces": {b: golden(b) for b in ("onnx", "torch")},
           "checks": {"18": checks(18)}}
    (DATA / "golden.json").write_text(json.dumps(out, indent=1) + "\n")
    for name, faces in out["faces"]["onnx"].items():
        print(name, [(f["box"], f["age"]) for f in faces])


if __name__ == "__main__":
    main()
