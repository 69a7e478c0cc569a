"""Tracks as JSON (one document) or CSV (one row per track and frame)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from faceage.errors import FaceageError

CSV_COLUMNS = ("track", "frame", "time", "left", "top", "right", "bottom", "detected", "frame_age", "weight",
               "track_age", "track_age_low", "track_age_high")


def tracks_document(info, tracks, settings: dict, problems: list[str]) -> dict:
    """The JSON answer of ``faceage video --json`` and of ``POST /v1/estimate-video``."""
    return {"video": info.to_dict() if info is not None else None, "settings": settings,
            "warnings": list(problems), "tracks": [t.to_dict() for t in tracks]}


def write_tracks(path: str | Path, document: dict) -> Path:
    """Write ``document`` (from :func:`tracks_document`) as .json, or its tracks as .csv rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise FaceageError(f"{path}: tracks are written as .json or .csv; change the file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(document, indent=1))
        return path
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for t in document["tracks"]:
            lo, hi = t["age_interval"]
            for f in t["frames"]:
                w.writerow([t["id"], f["frame"], f["time"], *f["box"], int(f["detected"]),
                            "" if f["age"] is None else f["age"], "" if f["weight"] is None else f["weight"],
                            t["age"], lo, hi])
    return path
