"""Check ``faceage predict --json`` output (read from standard input) against tests/data/golden.json.

CI pipes an installed wheel's output through it, so it needs nothing but the standard library:
    faceage predict tests/data/obama.jpg --json | python -m scripts.check_golden_json
Each image's faces must match the ONNX golden entry of the model named by ``--model`` (default: the
default model): the same count, boxes within 2 px and ages within 0.1 years (the tolerances of
tests/test_golden.py). Exit status 1 on any difference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden.json"
BOX_PX, AGE_YEARS = 2, 0.1


def differences(lines: list[str], golden: dict) -> list[str]:
    """What differs from the golden faces, one line each (empty: all match); every image must be golden."""
    problems, seen = [], 0
    for line in filter(str.strip, lines):
        doc = json.loads(line)
        name = Path(doc["path"]).name
        want = golden.get(name)
        if want is None:
            problems.append(f"{name}: no golden entry")
            continue
        seen += 1
        got = doc.get("faces")
        if got is None or len(got) != len(want):
            problems.append(f"{name}: {doc.get('error') or len(got)} faces, golden {len(want)}")
            continue
        for g, w in zip(got, want):
            if max(abs(a - b) for a, b in zip(g["box"], w["box"])) > BOX_PX or abs(g["age"] - w["age"]) > AGE_YEARS:
                problems.append(f"{name}: box {g['box']} age {g['age']}, golden box {w['box']} age {w['age']}")
    if not seen:
        problems.append("no predict --json line on standard input")
    return problems


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: faceage predict tests/data/obama.jpg --json | "
                                        "python -m scripts.check_golden_json")
    ap.add_argument("--model", help="the bundled model the output came from (default: the default model, as "
                                    "golden.json records it)")
    a = ap.parse_args()
    golden_file = json.loads(GOLDEN.read_text())
    models = golden_file["models"]
    name = a.model or golden_file["default"]
    if name not in models:
        print(f"golden check: no golden entry for model {name!r} (have: {', '.join(models)})", file=sys.stderr)
        return 1
    golden = models[name]["faces"]["onnx"]
    lines = sys.stdin.read().splitlines()
    problems = differences(lines, golden)
    for p in problems:
        print(f"golden check: {p}", file=sys.stderr)
    if not problems:
        print(f"golden check: {len([l for l in lines if l.strip()])} images match tests/data/golden.json")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
