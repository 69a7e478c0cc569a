"""Score a model on labelled images, preprocessed exactly as its record says.

Prepared crops (a manifest written by ``faceage prepare``) are scored as they
are; raw photos go through the whole pipeline (detect -> align -> estimate),
and photos where no face is found are counted (``no_face``) and scored on the
documented fallback, a centre crop.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceage.core.ages import ESTIMATES
from faceage.core.preprocess import resize_crop
from faceage.data.manifest import Sample, read_manifest
from faceage.errors import FaceageError
from faceage.core.imageio import load_image
from faceage.core.scoring import interval_coverage
from faceage.metrics import age_metrics, plot_cs_curves, plot_error_by_age


def load_eval_samples(data: str | Path, fmt: str | None) -> tuple[list[Sample], list[str], bool]:
    """(samples, problems, prealigned). A CSV is a manifest; a folder is read by the ``fmt`` importer."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".csv" and fmt in (None, "csv", "manifest"):
        manifest = read_manifest(data)
        prealigned = (data.parent / "prepare.json").is_file()
        return manifest.samples, manifest.problems, prealigned
    from faceage.data.importers import import_dataset

    if fmt is None:
        raise FaceageError(f"{data}: a folder needs --format (utkface, fgnet, morph2, afad, csv, folder)")
    imported = import_dataset(fmt, data)
    return imported.samples, imported.problems, False


def eval_crops(estimator, samples: list[Sample], *, prealigned: bool, quiet: bool = False):
    """(crops, ages, paths, fallback, problems): each readable sample's crop as ``evaluate`` scores it
    (prepared crops resized; raw photos: the largest face, or a centre crop where none is found: ``fallback``
    is True for those rows)."""
    crops, ages, fallback, problems, paths = [], [], [], [], []
    for s in tqdm(samples, desc="preprocessing" if prealigned else "detect + align", unit="img", disable=quiet):
        try:
            img = load_image(s.path)
        except FaceageError as exc:
            problems.append(str(exc))
            continue
        if prealigned or estimator.record.crop is None:
            crops.append(resize_crop(img, estimator.input_size))
            fallback.append(False)
        else:
            face = estimator.pipeline.faces(img, largest=True, fallback=True)[0]
            fallback.append(bool(face.fallback))
            crops.append(face.crop)
        ages.append(s.age)
        paths.append(str(s.path))
    return crops, ages, paths, fallback, problems


def evaluate(estimator, samples: list[Sample], *, prealigned: bool, quiet: bool = False) -> dict:
    """Per-image predictions and metrics. Unreadable images are reported and skipped."""
    start = time.perf_counter()
    crops, ages, paths, fallback, problems = eval_crops(estimator, samples, prealigned=prealigned, quiet=quiet)
    if not crops:
        raise FaceageError(f"no readable image to evaluate; first problems: {problems[:3]}")
    scores = estimator.score_aligned(crops)
    true = np.asarray(ages, dtype=np.float64)
    preds = {how: scores.ages(how) for how in ESTIMATES}
    how = estimator.record.estimate
    interval = scores.interval()
    report = age_metrics(preds[how], true)
    report["interval_coverage"] = interval_coverage(interval, true)
    report.update({
        "estimate": how,
        "tta": estimator.tta,
        **{f"mae_{h}": round(float(np.abs(preds[h] - true).mean()), 4) for h in ESTIMATES},
        "no_face": int(sum(fallback)),
        "unreadable": len(problems),
        "problems": problems[:50],
        "pipeline": ("prealigned crops" if prealigned else "whole image" if estimator.record.crop is None
                     else "detect + align + estimate"),
        "seconds": round(time.perf_counter() - start, 1),
    })
    report["_pred"], report["_true"], report["_paths"], report["_interval"] = preds[how], true, paths, interval
    report["_preds"] = preds  # every estimate's ages, for reports that compare them
    return report


def write_report(report: dict, out: str | Path, label: str = "model", plots: bool = True) -> dict:
    """Write report.json, predictions.csv and, with ``plots`` (needs the ``plots`` extra), cs_curve.png
    and error_by_age.png; return the JSON part."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pred, true, paths, interval = (report.pop(k) for k in ("_pred", "_true", "_paths", "_interval"))
    report.pop("_preds", None)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    with open(out / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "age", "predicted", "interval_low", "interval_high"])
        writer.writerows((p, int(t), f"{a:.2f}", f"{lo:.1f}", f"{hi:.1f}")
                         for p, t, a, (lo, hi) in zip(paths, true, pred, interval))
    if plots:
        plot_cs_curves({label: report["cs"]}, out / "cs_curve.png")
        plot_error_by_age(pred, true, out / "error_by_age.png")
    return report
