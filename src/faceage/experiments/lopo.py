"""``faceage experiment lopo``: leave-one-person-out cross-validation (FG-NET: 82 folds).

Fold *k* holds out every image of subject *k*; a seeded ``val_frac`` share of the
other subjects picks the best epoch, the rest train. With ``init`` (a model
file, e.g. one trained on UTKFace) each fold starts from its weights and
fine-tunes; the network and input size then come from the model's record, and
the data's crop geometry (``prepare.json``) must match the record's.

With ``extra_train`` (another prepared manifest, e.g. UTKFace crops) a seeded,
age-balanced subset of its training rows joins every fold's training split: a
small data set of children and teenagers (FG-NET) otherwise pulls a fine-tuned
model's adult ages towards its own mean. The held-out subject is never in it.

The paper's figure is the MAE over all images (every image is scored by the
fold that held it out); the mean of the per-fold MAEs is reported beside it.

Layout of ``OUT``::

    data/fold-SUBJECT.csv (+ prepare.json)  each fold's train/val/test rows
    folds/SUBJECT/fold.json                 the fold's predictions (= fold finished)
    report/                                 report.md, report.json, folds.csv, predictions.csv, PNGs

Rerunning the same command skips finished folds and resumes an interrupted one
from its last epoch; ``jobs`` > 1 runs folds in parallel processes.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from faceage.data.manifest import Sample, prepared_crop, read_manifest, write_manifest
from faceage.errors import ConfigError, FaceageError
from faceage.face.align import CropSpec
from faceage.experiments.report import data_fingerprint, md_table, provenance, write_report
from faceage.data.sets import crop_differences
from faceage.train.config import Config, load_config
from faceage.train.loop import Trainer
from faceage.models.weights import read_record

HEAVY_FILES = ("last.pt", "last.safetensors", "best.safetensors")


def fold_config(base: Config, init: str | Path | None) -> tuple[Config, dict | None]:
    """The config every fold trains with (network and input size from ``init``'s record), and that record."""
    if init is None:
        return base, None
    from faceage.models import locate

    # a bundled model's name (--init accurate), a file or a run folder; kept as given in the config and the
    # experiment's key, so a resume compares what the user typed
    file = locate(str(init), backend="torch")
    record = read_record(file)
    spec = record.model
    if spec.num_classes != 101:
        raise ConfigError(f"{init}: a {spec.num_classes}-class model cannot be fine-tuned here")
    cfg = base.override({"model": {"arch": spec.arch, "width": spec.width, "se_reduction": spec.se_reduction,
                                   "init": str(init)},
                         "data": {"input_size": int(record.input_size)}, "eval": {"estimate": record.estimate}})
    return cfg, {"path": str(init), "file": str(file), "model": record.model.to_dict(),
                 "input_size": record.input_size, "crop": record.crop and record.crop.to_dict(),
                 "training": record.training}


def pick_extra(samples: list[Sample], per_decade: int | None, min_age: int, seed: int) -> list[Sample]:
    """Extra training rows: the train split (the rows without a split if none is marked train), ages >= ``min_age``,
    at most ``per_decade`` per age decade (a seeded draw), relabelled split=train without a subject."""
    import random

    rows = [s for s in samples if s.split == "train"] or [s for s in samples if not s.split]
    rows = [s for s in rows if s.age >= min_age]
    if per_decade is not None:
        random.Random(seed).shuffle(rows)
        taken: dict[int, int] = {}
        keep = []
        for s in rows:
            d = s.age // 10
            if taken.get(d, 0) < per_decade:
                taken[d] = taken.get(d, 0) + 1
                keep.append(s)
        rows = sorted(keep, key=lambda s: str(s.path))
    if not rows:
        raise ConfigError(f"no extra training rows left (split=train or unsplit, age >= {min_age})")
    return [replace(s, subject=None, split="train") for s in rows]


def make_folds(samples: list[Sample], out: Path, val_frac: float, seed: int, prepare_json: Path | None,
               extra: Sequence[Sample] = ()) -> list[str]:
    """Write OUT/data/fold-SUBJECT.csv for every subject (+ the extra training rows); return the subjects."""
    import random

    subjects = sorted({s.subject for s in samples})
    ddir = out / "data"
    ddir.mkdir(parents=True, exist_ok=True)
    if prepare_json is not None and prepare_json.is_file():
        shutil.copy2(prepare_json, ddir / "prepare.json")
    for i, subj in enumerate(subjects):
        path = ddir / f"fold-{subj}.csv"
        others = [t for t in subjects if t != subj]
        random.Random(seed * 100003 + i).shuffle(others)
        n_val = max(1, round(val_frac * len(others)))
        val = set(others[:n_val])
        rows = [replace(s, split="test" if s.subject == subj else "val" if s.subject in val else "train")
                for s in samples] + list(extra)
        if not path.is_file():
            write_manifest(rows, path)
    return subjects


def _crop_check(first: CropSpec | None, second: CropSpec | None, allow: bool, problem: str, advice: str) -> list[str] | str:
    """"match", or the differences between two crop geometries (an error unless ``allow``)."""
    diffs = crop_differences(first, second)
    if diffs and not allow:
        raise ConfigError(f"{problem}: {'; '.join(diffs)} ({advice}, or pass --allow-crop-mismatch)")
    return diffs or "match"


def _experiment_key(state: dict) -> dict:
    """What must not change when an interrupted experiment is resumed (threads, cache folder may)."""
    cfg = json.loads(json.dumps(state["base_config"], default=str))
    flat = {f"{section}.{k}": v for section, values in cfg.items() if section != "run" for k, v in values.items()}
    flat.pop("data.cache_dir", None)
    flat["run.seed"] = cfg["run"].get("seed")
    return {**flat, "init": (state.get("init") or {}).get("path"),
            "val_frac": state["val_frac"], "seed": state["seed"], "weights": state["weights"],
            "data": state["fingerprint"], "extra_train": (state.get("extra_train") or {}).get("fingerprint")}


def check_same_experiment(path: Path, state: dict) -> None:
    """Refuse to continue OUT with other settings: its folds and report would mix two experiments."""
    if not path.is_file():
        return
    old, new = _experiment_key(json.loads(path.read_text())), _experiment_key(state)
    diffs = [k for k in new if k in old and old[k] != new[k]]  # keys newer versions added do not count
    if diffs:
        raise ConfigError(f"{path.parent} holds a leave-one-person-out run with other settings ({', '.join(diffs)} "
                          "differ); rerun with the same command to resume, or choose a new --out")


def fold_data(cfg: Config, manifest: Path) -> Config:
    """``cfg`` reading one fold's manifest: a base config that names several data sets (``data.datasets``, with
    their ``data.mix``), such as a campaign's, reads the fold instead."""
    return cfg.override({"data": {"manifest": str(manifest), "path": None, "datasets": None, "mix": None,
                                  "limit": None}})


def run_fold(cfg: Config, out: Path, subject: str, weights: str, keep_models: bool,
             stop_at_step: int | None = None) -> dict:
    """Train (resume/skip) one fold and score its held-out subject; returns fold.json's content."""
    from faceage.experiments.ablation import evaluate_split

    fdir = out / "folds" / subject
    done = fdir / "fold.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    cfg = fold_data(cfg, out / "data" / f"fold-{subject}.csv")
    run_dir = fdir / "run"
    if not (run_dir / "summary.json").is_file():
        trainer = Trainer(cfg, run_dir, quiet=True, stop_at_step=stop_at_step)
        trainer.fit(resume=(run_dir / "last.pt").is_file())
    test = evaluate_split(run_dir, "test", weights=weights, cfg=cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {"subject": subject, "n": test["n"], "mae": test["mae"], "pred": test["pred"], "true": test["true"],
              "paths": test["paths"], "best_val_mae": summary["best_val_mae"],
              "best_epoch": summary["record"]["training"].get("best_epoch"), "weights": weights,
              "seconds": round(time.perf_counter() - t0, 1)}
    tmp = done.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(done)
    if not keep_models:
        for name in HEAVY_FILES:
            (run_dir / name).unlink(missing_ok=True)
    return result


def _run_fold_job(job: tuple) -> dict:  # top level: picklable for worker processes
    return run_fold(*job)


def zero_shot(init: str | Path, samples: list[Sample], cfg: Config) -> dict:
    """The starting model on every image, without any fine-tuning (a reference for the LOPO figure)."""
    from faceage.data.cache import build_cache
    from faceage.metrics import age_metrics
    from faceage.runtime.torch_backend import TorchBackend
    from faceage.core.scoring import score

    cache = build_cache(samples, int(cfg.data.input_size), cfg.data.cache_dir, quiet=True)
    ages = np.array([samples[i].age for i in cache.index], dtype=np.float64)
    pred = score(TorchBackend(init), np.array(cache.images), cfg.eval.tta).age
    return {**age_metrics(pred, ages), "tta": cfg.eval.tta}


def run_lopo(base: Config, data: str | Path, out: str | Path, fmt: str | None = None, init: str | Path | None = None,
             val_frac: float = 0.1, seed: int = 0, jobs: int = 1, weights: str = "best.safetensors",
             keep_models: bool = False, max_folds: int | None = None, allow_crop_mismatch: bool = False,
             command: str | None = None, stop_at_step: int | None = None, extra_train: str | Path | None = None,
             extra_per_decade: int | None = None, extra_min_age: int = 0) -> dict:
    """Run (or finish) every fold; write OUT/report. ``max_folds``: only the first folds (quick checks);
    ``extra_*``: add another prepared data set's rows to every fold's training split (see the module doc)."""
    from faceage.experiments.ablation import load_any
    from faceage.experiments.report import command_line
    from faceage.data.sets import cached_splits

    out = Path(out)
    command = command if command is not None else command_line()
    samples, prepared = load_any(data, fmt)
    missing = sum(1 for s in samples if not s.subject)
    if missing:
        raise ConfigError(f"{data}: {missing} rows without a subject id; leave-one-person-out needs one per row")
    subjects_all = sorted({s.subject for s in samples})
    if len(subjects_all) < 3:
        raise ConfigError(f"{data}: {len(subjects_all)} subjects; leave-one-person-out needs at least 3")
    if not prepared:
        print(f"note: {data} is not a prepared manifest; its images are used whole (no face alignment)")
    prep = Path(data).parent / "prepare.json" if prepared else None
    data_crop = prepared_crop(data)
    cfg, init_info = fold_config(base, init)
    if init_info is not None:
        init = Path(init_info["file"])  # the file, for the crop check and the zero-shot score
        init_info["crop_check"] = _crop_check(read_record(init).crop, data_crop, allow_crop_mismatch,
                                              f"crop geometry of {data} differs from the model {init}",
                                              "prepare the data with the model's crop")
    extra, extra_info = [], None
    if extra_train is not None:
        extra_samples, _ = load_any(extra_train)
        check = _crop_check(data_crop, prepared_crop(extra_train), allow_crop_mismatch,
                            f"crop geometry of --extra-train {extra_train} differs from {data}",
                            "prepare both with the same crop")
        extra = pick_extra(extra_samples, extra_per_decade, extra_min_age, seed)
        extra_info = {"data": str(extra_train), "rows": len(extra), "per_decade": extra_per_decade,
                      "min_age": extra_min_age, "fingerprint": data_fingerprint(extra), "crop_check": check}
    state = {"base_config": cfg.to_dict(), "data": str(data), "init": init_info, "val_frac": val_frac, "seed": seed,
             "weights": weights, "subjects": subjects_all, "command": command,
             "fingerprint": data_fingerprint(samples), "data_crop": data_crop and data_crop.to_dict(), "extra_train": extra_info}
    check_same_experiment(out / "lopo.json", state)  # before any file of OUT is written
    subjects = make_folds(samples, out, val_frac, seed, prep, extra)
    if max_folds:
        subjects = subjects[:max_folds]
    (out / "lopo.json").write_text(json.dumps(state, indent=2, default=str))
    # decode the images once, before any fold (every fold's manifest lists the same rows in the same order)
    first = read_manifest(out / "data" / f"fold-{subjects[0]}.csv").samples
    cached_splits(first, int(cfg.data.input_size), cfg.data.cache_dir, quiet=True)
    if init is not None and not (out / "zero_shot.json").is_file():
        (out / "zero_shot.json").write_text(json.dumps(zero_shot(init, samples, cfg)))
    todo = [s for s in subjects if not (out / "folds" / s / "fold.json").is_file()]
    print(f"lopo: {len(subjects)} folds, {len(subjects) - len(todo)} already done, {len(todo)} to run"
          f"{f' in {jobs} processes' if jobs > 1 and todo else ''}", flush=True)
    jobs_args = [(cfg, out, s, weights, keep_models, stop_at_step) for s in todo]
    t0 = time.perf_counter()
    finished = 0

    def note(res: dict) -> None:
        nonlocal finished
        finished += 1
        eta = (time.perf_counter() - t0) / finished * (len(todo) - finished)
        print(f"[{finished}/{len(todo)}] subject {res['subject']}: {res['n']} images, MAE {res['mae']:.2f} "
              f"({res['seconds']:.0f}s, ~{eta / 60:.0f} min left)", flush=True)

    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_fold_job, j) for j in jobs_args]
            for fut in as_completed(futures):
                note(fut.result())
    else:
        for j in jobs_args:
            note(run_fold(*j))
    return write_lopo_report(out, subjects=subjects)


def first_subjects(out: str | Path, n: int) -> list[str]:
    """The first ``n`` subjects of a LOPO folder, in fold order."""
    return json.loads((Path(out) / "lopo.json").read_text())["subjects"][:n]


def _per_decade(extra: dict) -> str:
    return f", at most {extra['per_decade']} per age decade" if extra.get("per_decade") is not None else ""


def _backbone_note(cfg: Config) -> str:
    scale = float(cfg.optim.backbone_lr_scale)
    return f"; backbone at lr x {scale:g}" if scale != 1.0 else ""


def write_lopo_report(out: str | Path, subjects: list[str] | None = None, report_dir: str | Path | None = None) -> dict:
    from faceage.metrics import age_metrics, plot_cs_curves, plot_error_by_age
    from faceage.train.setup import model_spec

    out = Path(out)
    rdir = Path(report_dir) if report_dir else out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    state = json.loads((out / "lopo.json").read_text())
    subjects = subjects or state["subjects"]
    folds = [json.loads((out / "folds" / s / "fold.json").read_text()) for s in subjects
             if (out / "folds" / s / "fold.json").is_file()]
    if not folds:
        raise FaceageError(f"{out}: no finished fold")
    pred = np.concatenate([f["pred"] for f in folds])
    true = np.concatenate([f["true"] for f in folds])
    overall = age_metrics(pred, true)
    fold_maes = [f["mae"] for f in folds]
    per_fold = {"mean": round(statistics.fmean(fold_maes), 4),
                "std": round(statistics.stdev(fold_maes), 4) if len(fold_maes) > 1 else None}
    n_all = len(state["subjects"])
    # the zero-shot figure covers every image: beside a part of the folds it would not compare like with like
    zs = json.loads((out / "zero_shot.json").read_text()) \
        if (out / "zero_shot.json").is_file() and len(folds) == n_all else None
    curves = {"LOPO fine-tuned" if state.get("init") else "LOPO": overall["cs"]}
    if zs:
        curves["starting model, no fine-tuning"] = zs["cs"]
    plot_cs_curves(curves, rdir / "cs_curve.png", "FG-NET leave-one-person-out CS" if len(state["subjects"]) == 82
                   else "Leave-one-person-out CS")
    plot_error_by_age(pred, true, rdir / "error_by_age.png")
    with open(rdir / "folds.csv", "w") as fh:
        fh.write("subject,n,mae,best_val_mae,best_epoch,seconds\n")
        for f in folds:
            fh.write(f"{f['subject']},{f['n']},{f['mae']:.4f},{f['best_val_mae']:.4f},{f['best_epoch']},{f['seconds']}\n")
    with open(rdir / "predictions.csv", "w") as fh:
        fh.write("subject,file,age,predicted\n")
        for f in folds:
            for p, t, a in zip(f["paths"], f["true"], f["pred"]):
                fh.write(f"{f['subject']},{p},{t},{a:.2f}\n")
    cfg = load_config(overrides=state["base_config"])  # a state written before a key existed: its default
    init = state.get("init")
    body = [
        (f"The first {len(subjects)} of {n_all} folds only: " if len(subjects) < n_all else "")
        + f"{len(folds)} of {len(subjects)} folds finished ({len(true)} images scored, each by the fold "
        f"that held its subject out)" + ("; the starting model's zero-shot MAE is given once all folds are done."
                                         if len(folds) < n_all else "."),
        "",
        md_table(["measure", "value"], [
            ["MAE over all images (paper's figure)", overall["mae"]],
            ["mean of per-fold MAE", per_fold["mean"]],
            ["std of per-fold MAE", per_fold["std"] if per_fold["std"] is not None else float("nan")],
            ["CS(5)", overall["cs"]["5"]],
            ["starting model without fine-tuning, MAE (same images)", zs["mae"] if zs else "-"],
            ["paper (MA-SFV2, FG-NET LOPO)", 3.81],
        ]),
        "",
        (f"Each fold fine-tunes `{init['path']}` ({init['model'].get('arch')} {init['model'].get('width')}x, "
         f"{init['input_size']} px; crop check: {init.get('crop_check')}) for {cfg.optim.epochs} epochs at "
         f"lr {cfg.optim.lr} ({cfg.optim.schedule}"
         f"{_backbone_note(cfg)}), batch {cfg.optim.batch_size}; "
         if init else f"Each fold trains {model_spec(cfg).name} from scratch for "
         f"{cfg.optim.epochs} epochs; ")
        + f"{round(100 * state['val_frac'])}% of the other subjects pick the best epoch ({state['weights']})."
        + (f" Every fold's training split also holds {extra['rows']} rows of `{extra['data']}` (its training rows, "
           f"ages >= {extra['min_age']}{_per_decade(extra)}; crop check: "
           f"{extra['crop_check']}); they are never scored." if (extra := state.get("extra_train")) else ""),
        "",
        "## MAE by age decade",
        "",
        md_table(["ages", "images", "MAE", "bias (predicted - true)"],
                 [[k, v["n"], v["mae"], v["bias"]] for k, v in overall["mae_by_decade"].items()]),
        "",
        "## Per fold",
        "",
        md_table(["subject", "images", "MAE", "best val MAE", "best epoch"],
                 [[f["subject"], f["n"], f["mae"], f["best_val_mae"], f["best_epoch"]] for f in folds]),
        "",
        "`folds.csv` and `predictions.csv` hold the same numbers and every prediction.",
    ]
    results = {"mae": overall["mae"], "per_fold_mae": per_fold, "overall": overall, "zero_shot": zs,
               "folds": [{k: f[k] for k in ("subject", "n", "mae", "best_val_mae", "best_epoch", "seconds")}
                         for f in folds],
               "n_folds_done": len(folds), "n_folds": len(state["subjects"]), "init": init}
    prov = provenance(state.get("command"), cfg.to_dict(), data={"manifest": state["fingerprint"]})
    prov["data_source"] = state["data"]
    return write_report(rdir, "Leave-one-person-out", "\n".join(body), results, prov,
                        ["cs_curve.png", "error_by_age.png"])
