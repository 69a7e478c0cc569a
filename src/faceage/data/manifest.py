"""The manifest: one CSV row per labelled image, the hand-off between importers and training.

Columns: ``path,age`` required; ``subject``, ``split``, ``source``, ``detector``,
``fallback``, ``dataset`` optional. Paths are relative to the CSV's folder so a prepared data
set can be moved as a whole. Bad rows are reported with their row number and
skipped; a manifest without a single usable row is an error.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from faceage.errors import ManifestError
from faceage.face.align import CropSpec

MAX_AGE = 120


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``path`` is absolute once read from a manifest."""

    path: Path
    age: int
    subject: str | None = None
    split: str | None = None
    source: str | None = None
    detector: str | None = None
    fallback: bool = False
    dataset: str | None = None  # which data set the row belongs to, when several are trained together


COLUMNS = tuple(f.name for f in fields(Sample))


@dataclass
class Manifest:
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    root: Path | None = None

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split})


def _parse_age(text: str) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not value.is_integer() or not 0 <= value <= MAX_AGE:
        return None
    return int(value)


def read_manifest(csv_path: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read a manifest CSV; collect (not raise) per-row problems, raise if nothing is usable."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: manifest not found")
    root = csv_path.resolve().parent
    samples: list[Sample] = []
    problems: list[str] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "age"} <= set(reader.fieldnames):
            raise ManifestError(
                f"{csv_path}: a manifest needs a header with at least the columns 'path,age' "
                f"(found {reader.fieldnames})"
            )
        for lineno, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            age = _parse_age((row.get("age") or "").strip())
            if not rel:
                problems.append(f"{csv_path}:{lineno}: empty path")
                continue
            if age is None:
                problems.append(f"{csv_path}:{lineno}: age {row.get('age')!r} is not an integer in 0..{MAX_AGE}")
                continue
            path = (root / rel).resolve()
            if check_files and not path.is_file():
                problems.append(f"{csv_path}:{lineno}: file not found: {path}")
                continue
            samples.append(
                Sample(
                    path=path,
                    age=age,
                    subject=(row.get("subject") or None),
                    split=(row.get("split") or None),
                    source=(row.get("source") or None),
                    detector=(row.get("detector") or None),
                    fallback=(row.get("fallback") or "").strip().lower() in {"1", "true", "yes"},
                    dataset=(row.get("dataset") or None),
                )
            )
    if not samples:
        detail = f" First problems: {problems[:3]}" if problems else ""
        raise ManifestError(f"{csv_path}: no usable row.{detail}")
    return Manifest(samples=samples, problems=problems, root=root)


def write_manifest(samples: list[Sample], csv_path: str | os.PathLike) -> Path:
    """Write atomically, with paths relative to the CSV's folder where possible."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    root = csv_path.resolve().parent
    tmp = csv_path.with_suffix(csv_path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for s in samples:
            p = Path(s.path)
            try:
                rel = os.path.relpath(p.resolve(), root) if p.is_absolute() else str(p)
            except ValueError:  # other drive on Windows
                rel = str(p)
            writer.writerow(
                [rel, s.age, s.subject or "", s.split or "", s.source or "", s.detector or "", int(s.fallback),
                 s.dataset or ""]
            )
    os.replace(tmp, csv_path)
    return csv_path


def with_splits(samples: list[Sample], assignment: dict[Path, str]) -> list[Sample]:
    """Return samples with ``split`` set from ``assignment`` (path -> split name)."""
    return [replace(s, split=assignment.get(s.path, s.split)) for s in samples]


def prepared_crop(manifest: str | Path) -> CropSpec | None:
    """The crop geometry a manifest from `faceage prepare` was made with (its prepare.json); None otherwise."""
    prep = Path(manifest).parent / "prepare.json"
    spec = json.loads(prep.read_text()).get("crop_spec") if Path(manifest).is_file() and prep.is_file() else None
    return None if spec is None else CropSpec.from_dict(spec)
