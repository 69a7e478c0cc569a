"""A small photo folder for the batch and integration tests, and ``faceage predict --json``'s answers for it
(fixtures ``batch_photos`` and ``batch_expected`` in conftest.py)."""
from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from PIL import Image

from faceage.cli import main

PHOTOS = Path(__file__).parent / "data"
FACE_KEYS = ("box", "eyes", "age", "age_interval", "score", "fallback")


def make_photo_folder(root: Path) -> Path:
    """Three public-domain photos (five faces), a face-less image, three bad files, one photo in a sub-folder."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("obama.jpg", "biden.jpg", "obama_and_biden.jpg"):
        shutil.copy(PHOTOS / name, root / name)
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(root / "grey.png")
    (root / "notes.jpg").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.jpg").write_bytes((PHOTOS / "obama.jpg").read_bytes()[:5000])
    (root / "sub").mkdir()
    shutil.copy(PHOTOS / "biden.jpg", root / "sub" / "biden2.jpg")
    return root


def predict_json(*args: str) -> dict[str, dict]:
    """``faceage predict ARGS --json``, one record per path."""
    out = io.StringIO()
    with redirect_stdout(out):
        main(["predict", *args, "--json"])
    return {r["path"]: r for r in map(json.loads, out.getvalue().splitlines())}


def as_json_records(rows: list[dict]) -> dict[str, dict]:
    """Face rows folded back into ``predict --json``'s records, for comparing the two."""
    records: dict[str, dict] = {}
    for r in rows:
        if r["error"] is not None:
            assert r["path"] not in records
            records[r["path"]] = {"path": r["path"], "error": r["error"]}
            continue
        rec = records.setdefault(r["path"], {"path": r["path"], "faces": []})
        if r["face"] is not None:
            assert r["face"] == len(rec["faces"]), "faces of an image are together and in order"
            rec["faces"].append({k: r[k] for k in FACE_KEYS})
    return records
