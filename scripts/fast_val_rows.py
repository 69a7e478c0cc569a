"""Write the validation rows the bundled ``fast`` model never trained on: docs/model-card/fast-val-rows.txt.

``fast`` (version 2) was trained on crops prepared by an earlier face front end, which found 21,321 of
UTKFace's faces; today's finds 21,327, and since the seeded split shuffles whole groups, six more rows
give a different split. Its split is rebuilt here from today's crops without the six faces that the
earlier preparation missed (they are the difference between `docs/prepare/utkface/report.json`'s
no-face list and today's `report.json`): that gives 4,738 UTKFace validation rows, the count `fast`'s
model card reports. A model trained on another split is compared with ``fast`` on the rows both kept
out (``python -m scripts.model_card_numbers --only-rows docs/model-card/fast-val-rows.txt``).

    python -m scripts.fast_val_rows            # prints the counts
    python -m scripts.fast_val_rows --write    # writes docs/model-card/fast-val-rows.txt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "model-card" / "fast-val-rows.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/fast.yaml", help="fast's training config")
    ap.add_argument("--old-report", default=str(ROOT / "docs" / "prepare" / "utkface" / "report.json"),
                    help="the preparation report of the crops fast was trained on")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    a = ap.parse_args()

    from faceage.data.manifest import read_manifest
    from faceage.data.sets import with_splits
    from faceage.train.config import load_config

    cfg = load_config(a.config)
    old_missed = set(json.loads(Path(a.old_report).read_text())["no_face"])
    names = []
    for name, manifest in cfg.data.datasets.items():
        rows = read_manifest(manifest).samples
        now_missed = set(json.loads((Path(manifest).parent / "report.json").read_text())["no_face"])
        extra = old_missed - now_missed if name == "utkface" else set()
        rows = [s for s in rows if Path(s.source).name not in extra]
        val = sorted(Path(s.source).name for s in with_splits(rows, cfg.data) if s.split == "val")
        print(f"{name}: {len(rows)} rows ({len(extra)} found today but not then), {len(val)} validation rows")
        names += [f"{name}/{v}" for v in val]
    if a.write:
        OUT.write_text("".join(f"{n}\n" for n in names))
        print(f"wrote {OUT.relative_to(ROOT)} ({len(names)} rows)")


if __name__ == "__main__":
    main()
