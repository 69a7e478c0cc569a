"""Data set importers: a source folder (or CSV) -> labelled source images.

Each importer takes ``src`` and returns a :class:`faceage.data.manifest.Manifest`
whose ``samples`` point at the *source* images (not yet cropped; ``Sample.path``
and ``Sample.source`` are the original file) and whose ``problems`` list the
files whose label could not be read (reported, never fatal). ``prepare`` then
detects, aligns and crops them.

==========  =====================================================================
kind        layout
==========  =====================================================================
utkface     ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` (any depth); age = first field
fgnet       ``[images/]NNNAyy[a|b].JPG`` (any case); subject = NNN, age = yy
morph2      academic release CSV index (``id_num, ..., age, ..., photo``); file,
            age and subject columns found by name; ``src`` = the CSV or its folder
afad        ``AGE/GENDER/*.jpg`` (e.g. ``AFAD-Full/15/111/x.jpg``)
csv         a CSV with ``path,age[,subject]`` (header optional); paths relative to it
folder      one sub-folder per age: ``SRC/AGE/**/*.jpg``
==========  =====================================================================
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Callable

from faceage.data.manifest import MAX_AGE, Manifest, Sample
from faceage.errors import ManifestError
from faceage.core.imageio import IMAGE_SUFFIXES


def _age(text: str) -> int | None:
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    if not v.is_integer() or not 0 <= v <= MAX_AGE:
        return None
    return int(v)


def _images(root: Path, recursive: bool = True) -> list[Path]:
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _dir(src, kind: str) -> Path:
    src = Path(src)
    if not src.is_dir():
        raise ManifestError(f"{src}: not a folder; '{kind}' expects the data set's folder")
    return src


def _sample(path: Path, age: int, subject: str | None = None) -> Sample:
    path = path.resolve()
    return Sample(path=path, age=age, subject=subject, source=str(path))


def _done(samples, problems, root, kind) -> Manifest:
    if not samples:
        detail = f" First problems: {problems[:3]}" if problems else ""
        raise ManifestError(f"{root}: no labelled images found for '{kind}'.{detail}")
    return Manifest(samples=samples, problems=problems, root=Path(root).resolve())


def utkface(src) -> Manifest:
    root = _dir(src, "utkface")
    samples, problems = [], []
    for p in _images(root):
        field = p.name.split("_", 1)[0]
        age = _age(field) if field.isdigit() else None
        if age is None or "_" not in p.name:
            problems.append(f"{p}: file name does not start with AGE_ (expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg)")
            continue
        samples.append(_sample(p, age))
    return _done(samples, problems, root, "utkface")


_UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_")
UTK_GENDER = {"0": "men", "1": "women"}
UTK_RACE = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "other"}


def utkface_groups(paths: list[str]) -> dict[str, "np.ndarray"]:
    """Row masks ``{"gender: men": ..., "race: Asian": ...}`` from UTKFace's original file names
    (``AGE_GENDER_RACE_...``); a name without the fields is in no group."""
    import numpy as np

    labels = [_UTK_NAME.match(Path(p).name) for p in paths]
    out = {}
    for key, names, idx in (("gender", UTK_GENDER, 2), ("race", UTK_RACE, 3)):
        for code, name in names.items():
            out[f"{key}: {name}"] = np.array([m is not None and m.group(idx) == code for m in labels], bool)
    return out


_FGNET = re.compile(r"^(\d{3})a(\d{2})([ab]?)$", re.IGNORECASE)


def fgnet(src) -> Manifest:
    root = _dir(src, "fgnet")
    folder = root / "images" if (root / "images").is_dir() else root
    samples, problems = [], []
    for p in _images(folder, recursive=False):
        m = _FGNET.match(p.stem)
        if not m:
            problems.append(f"{p}: file name is not NNNAyy[a|b] (person NNN at age yy)")
            continue
        samples.append(_sample(p, int(m.group(2)), m.group(1)))
    return _done(samples, problems, root, "fgnet")


_MORPH_FILE_COLS = ("photo", "file", "filename", "file_name", "path", "image", "img")
_MORPH_AGE_COLS = ("age",)
_MORPH_SUBJECT_COLS = ("id_num", "subject", "subject_id", "id", "person")
_MORPH_NAME = re.compile(r"^(\d+)_(\d+)([MF])(\d+)$", re.IGNORECASE)  # 003094_1M58


def _pick(header: list[str], names) -> str | None:
    low = {h.strip().lower(): h for h in header}
    return next((low[n] for n in names if n in low), None)


def _resolve(base: Path, rel: str, extra_dirs=()) -> Path | None:
    rel = rel.strip().replace("\\", "/")
    cands = [Path(rel) if Path(rel).is_absolute() else base / rel]
    name = Path(rel).name
    cands += [base / name] + [base / d / name for d in extra_dirs]
    return next((c for c in cands if c.is_file()), None)


def morph2(src) -> Manifest:
    src = Path(src)
    if src.is_dir():
        csvs = sorted(src.glob("*.csv"))
        if len(csvs) != 1:
            raise ManifestError(f"{src}: expected exactly one MORPH index CSV in the folder, found {len(csvs)}; pass the CSV itself")
        src = csvs[0]
    if not src.is_file():
        raise ManifestError(f"{src}: MORPH index CSV not found")
    base = src.parent
    extra = [d.name for d in base.iterdir() if d.is_dir()]
    samples, problems = [], []
    with open(src, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        fcol, acol, scol = _pick(header, _MORPH_FILE_COLS), _pick(header, _MORPH_AGE_COLS), _pick(header, _MORPH_SUBJECT_COLS)
        if fcol is None:
            raise ManifestError(f"{src}: no file column (one of {_MORPH_FILE_COLS}) in header {header}")
        for lineno, row in enumerate(reader, start=2):
            rel = (row.get(fcol) or "").strip()
            m = _MORPH_NAME.match(Path(rel).stem)
            age = _age(row[acol]) if acol else None
            if age is None and m:
                age = _age(m.group(4))
            subject = (row.get(scol) or "").strip() if scol else ""
            if not subject and m:
                subject = m.group(1)
            if not rel or age is None:
                problems.append(f"{src}:{lineno}: no usable file/age ({rel!r}, {row.get(acol) if acol else None!r})")
                continue
            path = _resolve(base, rel, extra)
            if path is None:
                problems.append(f"{src}:{lineno}: file not found: {rel}")
                continue
            samples.append(_sample(path, age, subject or None))
    return _done(samples, problems, base, "morph2")


def afad(src) -> Manifest:
    root = _dir(src, "afad")
    samples, problems = [], []
    for p in _images(root):
        parts = p.relative_to(root).parts
        age = _age(parts[-3]) if len(parts) >= 3 else None
        if age is None:
            problems.append(f"{p}: not under AGE/GENDER/ (expected e.g. 25/111/x.jpg)")
            continue
        samples.append(_sample(p, age))
    return _done(samples, problems, root, "afad")


def csv_index(src) -> Manifest:
    src = Path(src)
    if not src.is_file():
        raise ManifestError(f"{src}: CSV not found; 'csv' expects a file with path,age[,subject] rows")
    base = src.parent
    samples, problems = [], []
    with open(src, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    cols = {"path": 0, "age": 1, "subject": 2}
    start = 0
    if rows and _age(rows[0][1] if len(rows[0]) > 1 else "") is None:
        header = [h.strip().lower() for h in rows[0]]
        if "path" in header and "age" in header:
            cols = {k: header.index(k) if k in header else None for k in cols}
        start = 1
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        get = lambda k: row[cols[k]].strip() if cols[k] is not None and cols[k] < len(row) else ""
        rel, age, subject = get("path"), _age(get("age")), get("subject") or None
        if not rel or age is None:
            problems.append(f"{src}:{lineno}: needs path,age with age an integer in 0..{MAX_AGE}: {row}")
            continue
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if not path.is_file():
            problems.append(f"{src}:{lineno}: file not found: {rel}")
            continue
        samples.append(_sample(path, age, subject))
    return _done(samples, problems, base, "csv")


def folder(src) -> Manifest:
    root = _dir(src, "folder")
    samples, problems = [], []
    for p in _images(root):
        parts = p.relative_to(root).parts
        age = _age(parts[0]) if len(parts) >= 2 else None
        if age is None:
            problems.append(f"{p}: not inside an AGE sub-folder (expected SRC/AGE/file.jpg)")
            continue
        samples.append(_sample(p, age))
    return _done(samples, problems, root, "folder")


IMPORTERS: dict[str, Callable[..., Manifest]] = {
    "utkface": utkface,
    "fgnet": fgnet,
    "morph2": morph2,
    "afad": afad,
    "csv": csv_index,
    "folder": folder,
}


def import_dataset(kind: str, src) -> Manifest:
    if kind not in IMPORTERS:
        raise ManifestError(f"unknown data set kind {kind!r}; choose one of {', '.join(IMPORTERS)}")
    return IMPORTERS[kind](src)
