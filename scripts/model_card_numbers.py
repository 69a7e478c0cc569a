"""The numbers in docs/model_card.md, for one or more models side by side.

Validation sets: each data set of a training config (its seeded split, rebuilt exactly as training
made it), scored on the prepared crops for a model whose record has their crop geometry, and through
the whole pipeline on the same rows' source photos (detect, align with the model's own crop, estimate)
for a model cropped otherwise (``fast`` beside a model trained on dlib's 150-px chips); FG-NET through
the whole pipeline on the raw photos (never trained on). Per set: MAE, CS(5), bias and MAE by decade, 80% interval
coverage; UTKFace also by gender and race (from its file names). Writes OUT/numbers.json, one
report folder per model and set (report.json, predictions.csv, plots) and prints Markdown tables.

    python -m scripts.model_card_numbers --config configs/fast.yaml \
        v1=docs/runs/default-model/best.safetensors v2=src/faceage/models/fast.safetensors
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from faceage import AgeEstimator
from faceage.data.importers import import_dataset, utkface_groups
from faceage.evaluate import evaluate, write_report
from faceage.train.config import load_config
from faceage.data.sets import crop_differences, load_samples
from benchmarks._common import REPO, add_output_arguments, parse_args  # noqa: E402 - --write / --out, as the benchmarks

def score_set(est: AgeEstimator, samples, prealigned: bool, out: Path, label: str) -> dict:
    rep = evaluate(est, samples, prealigned=prealigned, quiet=True)
    pred, true = rep["_pred"], rep["_true"]
    sources = {str(s.path): str(s.source or s.path) for s in samples}
    groups = utkface_groups([sources.get(p, p) for p in rep["_paths"]]) if "utkface" in label else {}
    rep["groups"] = {g: {"n": int(m.sum()), "mae": round(float(np.abs(pred[m] - true[m]).mean()), 3),
                         "bias": round(float((pred[m] - true[m]).mean()), 3)} for g, m in groups.items() if m.any()}
    return write_report(rep, out, label=label)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="LABEL=MODEL")
    ap.add_argument("--config", default="configs/fast.yaml", help="training config naming the data sets")
    ap.add_argument("--fgnet", default="../shared/data/fgnet", help="FG-NET folder (raw photos)")
    ap.add_argument("--tta", default="zoomflip")
    ap.add_argument("--only-rows", default=None, metavar="FILE",
                    help="keep only the validation rows listed in FILE (DATASET/source file name per line), e.g. "
                         "docs/model-card/fast-val-rows.txt: models trained on other splits compare on rows none "
                         "of them trained on (scripts/fast_val_rows.py)")
    add_output_arguments(ap, REPO / "docs" / "model-card")
    a = parse_args(ap, tracked=REPO / "docs" / "model-card")
    cfg = load_config(a.config)
    samples, _, crop = load_samples(cfg.data)
    listed = set(Path(a.only_rows).read_text().split()) if a.only_rows else None
    sets = {name: ([s for s in samples if s.dataset == name and s.split == "val" and
                    (listed is None or f"{name}/{Path(s.source or s.path).name}" in listed)], True)
            for name in cfg.data.datasets}
    sets["fgnet"] = (import_dataset("fgnet", a.fgnet).samples, False)
    numbers = {"_rows": {"config": a.config, "only_rows": a.only_rows}}
    for spec in a.models:
        label, path = spec.split("=", 1)
        est = AgeEstimator(path, tta=a.tta)
        own_crops = not crop_differences(est.record.crop, crop)
        numbers[label] = {"model": path, "tta": a.tta, "validation": "prepared crops" if own_crops else
                          "whole pipeline on the source photos (the prepared crops are another geometry)"}
        for name, (rows, prealigned) in sets.items():
            if prealigned and not own_crops:
                sourceless = sum(not s.source for s in rows)
                if sourceless:
                    raise SystemExit(f"{name}: {sourceless} of {len(rows)} validation rows name no source photo, "
                                     f"so {label} (cropped unlike them) cannot be scored on the same rows")
                rows, prealigned = [replace(s, path=Path(s.source)) for s in rows], False
            rep = score_set(est, rows, prealigned, Path(a.out) / label / name, name)
            numbers[label][name] = rep
            print(f"{label} {name}: n {rep['n']} MAE {rep['mae']:.3f} CS5 {rep['cs']['5']:.3f} "
                  f"interval {rep['interval_coverage']:.3f} no face {rep['no_face']}", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "numbers.json").write_text(json.dumps(numbers, indent=1))
    labels = [k for k in numbers if not k.startswith("_")]
    print("\n| set | " + " | ".join(f"{m} MAE (CS5, 80% interval holds)" for m in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in sets:
        print(f"| {name} ({numbers[labels[0]][name]['n']}) | " + " | ".join(
            f"{numbers[m][name]['mae']:.2f} ({numbers[m][name]['cs']['5']:.3f}, "
            f"{numbers[m][name]['interval_coverage']:.2f})" for m in labels) + " |")
    for name in sets:
        print(f"\n{name}: MAE / bias by decade\n| decade | n | " + " | ".join(labels) + " |")
        print("|---|---|" + "---|" * len(labels))
        for dec, v in numbers[labels[0]][name]["mae_by_decade"].items():
            print(f"| {dec} | {v['n']} | " + " | ".join(
                f"{numbers[m][name]['mae_by_decade'][dec]['mae']:.2f} / "
                f"{numbers[m][name]['mae_by_decade'][dec]['bias']:+.2f}" for m in labels) + " |")
    groups = numbers[labels[0]].get("utkface", {}).get("groups", {})
    if groups:
        print("\nUTKFace validation by group (MAE / bias)\n| group | n | " + " | ".join(labels) + " |")
        print("|---|---|" + "---|" * len(labels))
        for g, v in groups.items():
            print(f"| {g} | {v['n']} | " + " | ".join(
                f"{numbers[m]['utkface']['groups'][g]['mae']:.2f} / {numbers[m]['utkface']['groups'][g]['bias']:+.2f}"
                for m in labels) + " |")


if __name__ == "__main__":
    main()
