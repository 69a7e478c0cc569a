"""``prepare``: importer -> decode -> detect -> align -> crop files + manifest + report.

Output folder ``OUT``::

    images/...          one crop per source image (largest face), PNG or JPEG (q95)
    manifest.csv        path, age, subject, split, source, detector, fallback
    prepare.json        the CropSpec and settings (training stores the spec with the model)
    results.jsonl       one line per processed source file (resume log)
    report.json/.md     counts, misses, unreadable files, duplicates, time, files/s
    age_histogram.png

Resumable and idempotent: a re-run reads ``results.jsonl`` and skips files whose
crop exists (and files already found face-less, unless the fallback setting
changed); unreadable files are retried. Unreadable files are reported and
skipped, never a crash: each file is processed in a worker process, and a file on
which a worker dies (a native crash in a decoder or dlib) is recorded as unreadable
(:mod:`faceage.workers`); the manifest and report are always written. Byte-identical source files (same SHA-1) are grouped;
groups with different ages are listed as conflicts. When a data set has no
subject ids, the members of a duplicate group share the pseudo-subject
``dup-<sha1[:12]>`` so a subject-aware split keeps them on one side.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from faceage.data.importers import import_dataset
from faceage.data.manifest import Sample, write_manifest
from faceage.errors import FaceageError, ImageError
from faceage.extras import message, missing
from faceage.face.align import CropSpec
from faceage.face.detect import DEFAULT_DETECTOR
from faceage.workers import CRASH_MESSAGE, imap_isolated, native_failure, one_line

if TYPE_CHECKING:
    from faceage.face.detect import Detector

RESULTS = "results.jsonl"
_PIPE = None  # per-process FacePipeline


def _init_worker(spec: CropSpec, detector: str | Detector) -> None:
    global _PIPE
    from faceage.face.pipeline import FacePipeline

    _PIPE = FacePipeline(detector, spec)


def _process(job: tuple[str, str, str, bool, int]) -> dict:
    """Decode, detect, align and save one file. Never raises."""
    key, src, dst, fallback, quality = job
    t0 = time.perf_counter()
    rec = _error_record(key, src, None)
    try:
        from faceage.core.imageio import load_image, read_image_file

        data = read_image_file(Path(src))
        rec["sha1"] = hashlib.sha1(data).hexdigest()
        img = load_image(data, name=src)
        faces = _PIPE.faces(img, fallback=fallback)
        rec["faces"] = sum(not f.fallback for f in faces)
        if not faces:
            rec["status"] = "noface"
        else:
            f = faces[0]
            from PIL import Image

            out = Path(dst)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            fmt = "PNG" if out.suffix.lower() == ".png" else "JPEG"
            opts = {"optimize": False} if fmt == "PNG" else {"quality": quality, "subsampling": 0}
            Image.fromarray(f.crop).save(tmp, format=fmt, **opts)
            os.replace(tmp, out)
            rec.update(status="ok", crop=dst, detector=f.detector, fallback=f.fallback,
                       box=list(f.box), eyes=[list(e) for e in f.eyes])
    except ImageError as exc:
        rec["error"] = str(exc)
    except Exception as exc:  # never crash the whole run on one file
        rec["error"] = f"{src}: {one_line(exc)}"
        if native_failure(exc):
            rec["suspect"] = True  # a native library may have damaged the worker: imap_isolated replaces it
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    return rec


def _error_record(key: str, src: str, error: str | None) -> dict:
    return {"key": key, "source": src, "crop": None, "status": "error", "detector": None, "fallback": False,
            "sha1": None, "faces": 0, "error": error}


def _crashed(job: tuple) -> dict:
    """The record of a file whose worker process died on it (see faceage.workers)."""
    key, src = job[0], job[1]
    return {**_error_record(key, src, f"{src}: {CRASH_MESSAGE}"), "seconds": None}


def _crop_name(key: str, ext: str) -> str:
    p = Path(key)
    name = p.name
    for suf in (".jpg.chip.jpg", ".jpg.chip.png"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    else:
        name = p.stem
    return str(Path("images") / p.parent / (name + ext))


def _load_results(path: Path) -> dict[str, dict]:
    out = {}
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    out[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a half-written last line after an interruption
    return out


def prepare(
    kind: str,
    src,
    out,
    *,
    spec: CropSpec = CropSpec(),
    workers: int | None = None,
    fallback: bool = False,
    detector: str | Detector = DEFAULT_DETECTOR,
    image_format: str = "png",
    quality: int = 95,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Import ``src`` as data set ``kind``, crop every face into ``out``; return the report dict.

    Files are processed in ``workers`` spawned processes (at least one, so that a native crash
    on one file is recorded as that file's error and never stops the run); ``detector`` is a
    registered detector name or a picklable detector object."""
    t_start = time.perf_counter()
    src, out = Path(src), Path(out)
    if image_format.lower() not in ("png", "jpg", "jpeg"):
        raise FaceageError(f"image format {image_format!r} not supported; use png or jpg")
    ext = ".png" if image_format.lower() == "png" else ".jpg"
    workers = max(1, int(workers or os.cpu_count() or 1))
    imported = import_dataset(kind, src)
    samples = imported.samples[:limit] if limit else imported.samples
    root = imported.root or src.resolve()

    out.mkdir(parents=True, exist_ok=True)
    detector_name = detector if isinstance(detector, str) else type(detector).__name__
    settings = {"kind": kind, "src": str(src.resolve()), "crop_spec": spec.to_dict(), "detector": detector_name,
                "image_format": ext[1:]}
    prep_json = out / "prepare.json"
    if prep_json.is_file():
        try:
            old = json.loads(prep_json.read_text())
        except json.JSONDecodeError:
            old = {}
        changed = [k for k in ("kind", "crop_spec", "detector", "image_format") if old.get(k) != settings[k]]
        if changed:
            raise FaceageError(
                f"{out}: already prepared with different settings ({', '.join(changed)}: "
                f"{ {k: old.get(k) for k in changed} }); use a new output folder or delete this one"
            )
    from faceage import __version__

    prep_json.write_text(json.dumps({**settings, "fallback": fallback, "faceage_version": __version__}, indent=2) + "\n")

    # keys are source paths relative to the data set root; crop names derive from them
    def key_of(s: Sample) -> str:
        try:
            return Path(s.path).relative_to(root).as_posix()
        except ValueError:
            return Path(s.path).as_posix().lstrip("/")

    keyed: dict[str, Sample] = {}
    for s in samples:
        keyed.setdefault(key_of(s), s)
    crop_of: dict[str, str] = {}
    used: set[str] = set()
    for key in keyed:
        name = _crop_name(key, ext)
        n = 1
        while name in used:
            n += 1
            name = _crop_name(key, f"-{n}{ext}")
        used.add(name)
        crop_of[key] = name

    res_path = out / RESULTS
    done = _load_results(res_path)
    todo, skipped = [], 0
    for key, s in keyed.items():
        rec = done.get(key)
        if rec and rec.get("status") == "ok" and (out / rec["crop"]).is_file() and (fallback or not rec.get("fallback")):
            skipped += 1
            continue
        if rec and rec.get("status") == "noface" and not fallback:
            skipped += 1
            continue
        todo.append((key, str(s.path), str(out / crop_of[key]), fallback, quality))

    t_proc = time.perf_counter()
    with open(res_path, "a", encoding="utf-8") as log:
        def record(rec: dict) -> None:
            if rec.get("crop"):
                rec["crop"] = Path(rec["crop"]).relative_to(out).as_posix()
            done[rec["key"]] = rec
            log.write(json.dumps(rec) + "\n")
            log.flush()

        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="file", desc=f"prepare {kind}", smoothing=0.05)
        try:
            for rec in imap_isolated(_process, todo, workers=min(workers, max(1, len(todo))),
                                     initializer=_init_worker, initargs=(spec, detector),
                                     on_crash=_crashed, suspect=lambda rec: rec.get("suspect", False)):
                record(rec)
                bar and bar.update(1)
        finally:
            if bar:
                bar.close()
    t_end = time.perf_counter()

    # ---- manifest
    recs = {k: done[k] for k in keyed if k in done}
    by_hash: dict[str, list[str]] = defaultdict(list)
    for k, r in recs.items():
        if r.get("sha1"):
            by_hash[r["sha1"]].append(k)
    dup_groups = {h: sorted(ks) for h, ks in by_hash.items() if len(ks) > 1}
    dup_subject = {k: f"dup-{h[:12]}" for h, ks in dup_groups.items() for k in ks}
    manifest_rows = []
    for k, s in keyed.items():
        r = recs.get(k)
        if not r or r.get("status") != "ok":
            continue
        manifest_rows.append(replace(
            s, path=(out / r["crop"]).resolve(), source=str(s.path), detector=r.get("detector"),
            fallback=bool(r.get("fallback")), subject=s.subject or dup_subject.get(k),
        ))
    if manifest_rows:
        write_manifest(manifest_rows, out / "manifest.csv")

    # ---- report
    status = Counter(r.get("status") for r in recs.values())
    conflicts = []
    for h, ks in sorted(dup_groups.items(), key=lambda kv: kv[1]):
        ages = sorted({keyed[k].age for k in ks})
        if len(ages) > 1:
            conflicts.append({"sha1": h, "ages": ages, "files": [{"file": k, "age": keyed[k].age} for k in ks]})
    n_proc = len(todo)
    report = {
        "kind": kind,
        "src": str(src.resolve()),
        "out": str(out.resolve()),
        "crop_spec": spec.to_dict(),
        "detector": detector_name,
        "fallback_enabled": fallback,
        "imported": len(imported.samples),
        "considered": len(keyed),
        "label_problems": imported.problems,
        "processed_this_run": n_proc,
        "skipped_already_done": skipped,
        "in_manifest": len(manifest_rows),
        "faces_found": sum(1 for r in recs.values() if r.get("status") == "ok" and not r.get("fallback")),
        "fallback_crops": sum(1 for r in recs.values() if r.get("status") == "ok" and r.get("fallback")),
        "no_face": sorted(k for k, r in recs.items() if r.get("status") == "noface"),
        "multiple_faces": sum(1 for r in recs.values() if r.get("faces", 0) > 1),
        "unreadable": [{"file": k, "error": r.get("error")} for k, r in sorted(recs.items()) if r.get("status") == "error"],
        "detector_passes": dict(Counter(r.get("detector") for r in recs.values() if r.get("status") == "ok").most_common()),
        "duplicate_groups": len(dup_groups),
        "duplicate_files": sum(len(v) for v in dup_groups.values()),
        "duplicate_groups_conflicting_ages": len(conflicts),
        "conflicts": conflicts,
        "duplicates": [ks for _, ks in sorted(dup_groups.items(), key=lambda kv: kv[1])],
        "status_counts": dict(status),
        "seconds_processing": round(t_end - t_proc, 2),
        "seconds_total": round(time.perf_counter() - t_start, 2),
        "files_per_s": round(n_proc / (t_end - t_proc), 2) if n_proc and t_end > t_proc else None,
        "workers": workers,
    }
    ages = [s.age for s in manifest_rows]
    absent = missing("plots")
    if absent:  # the crops and manifest need no matplotlib; only the histogram does
        report["histogram"] = "skipped: " + message("plots", "age_histogram.png", absent)
    elif ages:
        _histogram(ages, out / "age_histogram.png", kind)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


def _histogram(ages: list[int], path: Path, title: str) -> None:
    from faceage.metrics import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(ages, bins=range(0, max(ages) + 2), color="#4a7ab0")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("images")
    ax.set_title(f"{title}: {len(ages)} images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(r: dict) -> str:
    lines = [
        f"# prepare {r['kind']}: {r['src']}",
        "",
        f"Crop spec: {r['crop_spec']}; detector {r['detector']}; fallback {'on' if r['fallback_enabled'] else 'off'}",
        "",
        "| | count |",
        "|---|---|",
        f"| source images | {r['considered']} |",
        f"| file names without a usable label | {len(r['label_problems'])} |",
        f"| faces found | {r['faces_found']} |",
        f"| centre-crop fallbacks | {r['fallback_crops']} |",
        f"| no face (skipped) | {len(r['no_face'])} |",
        f"| unreadable (skipped) | {len(r['unreadable'])} |",
        f"| images with more than one face (largest kept) | {r['multiple_faces']} |",
        f"| rows in manifest.csv | {r['in_manifest']} |",
        f"| byte-identical duplicate groups | {r['duplicate_groups']} ({r['duplicate_files']} files) |",
        f"| ... with conflicting ages | {r['duplicate_groups_conflicting_ages']} |",
        f"| processed this run / skipped (done before) | {r['processed_this_run']} / {r['skipped_already_done']} |",
        f"| time (processing) | {r['seconds_processing']} s, {r['files_per_s']} files/s, {r['workers']} workers |",
        "",
        "Detector passes: " + ", ".join(f"{k} {v}" for k, v in r["detector_passes"].items()),
        "",
        r.get("histogram", "![age histogram](age_histogram.png)"),
        "",
    ]
    if r["no_face"]:
        lines += ["## No face found", ""] + [f"- {k}" for k in r["no_face"]] + [""]
    if r["unreadable"]:
        lines += ["## Unreadable files", ""] + [f"- {u['file']}: {u['error']}" for u in r["unreadable"]] + [""]
    if r["label_problems"]:
        lines += ["## Labels not understood", ""] + [f"- {p}" for p in r["label_problems"]] + [""]
    if r["conflicts"]:
        lines += ["## Byte-identical files with conflicting ages", "", "| sha1 | files (age) |", "|---|---|"]
        lines += [f"| {c['sha1'][:12]} | " + ", ".join(f"{f['file']} ({f['age']})" for f in c["files"]) + " |" for c in r["conflicts"]]
        lines += [""]
    return "\n".join(lines)
