"""``faceage experiment ablation``: the paper's variant grid x N seeds, resumable, with a report.

Variants (paper Sec. 4.4; "align" = eye-aligned crops from ``faceage prepare``,
the others use the unaligned images; "ma" = mixed attention; "l1" = the
regression term, weight ``loss.reg_weight`` of the base config):

==================  ======================  ====================================
variant             data                    overrides on the base config
==================  ======================  ====================================
sfv2_l1             unaligned               model.arch=sfv2
ma_sfv2_l1          unaligned               model.arch=ma_sfv2
align_sfv2_l1       aligned                 model.arch=sfv2
align_ma_sfv2_l1    aligned                 model.arch=ma_sfv2
no_augmentation     aligned                 model.arch=ma_sfv2, every augment.* probability 0
==================  ======================  ====================================

Both data sets are reduced to the images present in both (matched by source
file), optionally to a seeded subset (``limit``), and split once (seeded,
subject/duplicate-exclusive) into train/val/test; every variant and seed trains
on the same train rows, picks its best epoch on the val rows and is scored on
the test rows. Seeds vary initialisation, batch order and augmentation.

Layout of ``OUT``::

    data/{aligned,unaligned}/manifest.csv   the split data (aligned: + prepare.json)
    runs/VARIANT/seed-K/                    training runs (summary.json = finished) + test.json
    report/                                 report.md, report.json, PNGs

Rerunning the same command skips finished runs and resumes interrupted ones.
"""
from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from faceage.data.manifest import Sample, read_manifest, write_manifest
from faceage.data.split import group_keys
from faceage.errors import ConfigError, FaceageError
from faceage.experiments.report import data_fingerprint, md_table, provenance, write_report
from faceage.experiments.split import parse_ratios, split_samples, split_violations
from faceage.train.config import Config, load_config

NO_AUGMENT = {"flip": 0.0, "rotate": 0.0, "scale": 0.0, "shift": 0.0, "noise": 0.0, "grey": 0.0,
              "jitter": 0.0, "blur": 0.0}
VARIANTS: dict[str, dict] = {
    "sfv2_l1": {"aligned": False, "overrides": {"model": {"arch": "sfv2"}}},
    "ma_sfv2_l1": {"aligned": False, "overrides": {"model": {"arch": "ma_sfv2"}}},
    "align_sfv2_l1": {"aligned": True, "overrides": {"model": {"arch": "sfv2"}}},
    "align_ma_sfv2_l1": {"aligned": True, "overrides": {"model": {"arch": "ma_sfv2"}}},
    "no_augmentation": {"aligned": True, "overrides": {"model": {"arch": "ma_sfv2"}, "augment": NO_AUGMENT}},
}
PAPER_MAE = {"sfv2_l1": (2.91, 0.020), "ma_sfv2_l1": (2.88, 0.027), "align_sfv2_l1": (2.72, 0.018),
             "align_ma_sfv2_l1": (2.68, 0.030)}  # MORPH2, 33 runs: mean (variance)


# -- data ------------------------------------------------------------------------------------------
def load_any(data: str | Path, fmt: str | None = None) -> tuple[list[Sample], bool]:
    """(samples, is_prepared) from a manifest CSV or a data set folder read by an importer."""
    data = Path(data)
    if data.is_file():
        return read_manifest(data).samples, (data.parent / "prepare.json").is_file()
    from faceage.data.importers import import_dataset

    if not data.is_dir():
        raise FaceageError(f"{data}: neither a manifest CSV nor a folder")
    return import_dataset(fmt or "utkface", data).samples, False


def _source_key(s: Sample) -> str:
    return str(Path(s.source).resolve()) if s.source else str(Path(s.path).resolve())


def _with_group_subjects(samples: list[Sample], keys: list[str]) -> list[Sample]:
    # record duplicate groups as a pseudo-subject, as `faceage prepare` does, so later splits agree
    out = []
    for s, k in zip(samples, keys):
        if not s.subject and k.startswith("content:"):
            out.append(s)
        else:
            out.append(replace(s, subject=s.subject or k.split(":", 1)[1]))
    return out


def prepare_data(out: Path, aligned: str | Path | None, unaligned: str | Path | None, unaligned_format: str | None,
                 ratios: str = "7:2:1", split_seed: int = 0, limit: int | None = None, quiet: bool = False) -> dict:
    """Write OUT/data/{aligned,unaligned}/manifest.csv with one shared split; return their paths + fingerprints.

    Reuses the files of an earlier call; raises if the inputs would now give other rows.
    """
    import random

    sets: dict[str, list[Sample]] = {}
    prep_json = None
    if aligned:
        sets["aligned"], prepared = load_any(aligned)
        if not prepared:
            raise ConfigError(f"{aligned}: the aligned data must be a manifest written by `faceage prepare` "
                              "(prepare.json beside it records the crop geometry)")
        prep_json = Path(aligned).parent / "prepare.json"
    if unaligned:
        sets["unaligned"], _ = load_any(unaligned, unaligned_format)
    if not sets:
        raise ConfigError("give --aligned MANIFEST and/or --unaligned MANIFEST_OR_FOLDER")
    # the images present in every data set, matched by source file, in a stable order
    common = set.intersection(*({_source_key(s) for s in v} for v in sets.values()))
    order = sorted(common)
    random.Random(split_seed).shuffle(order)
    if limit:
        order = order[: int(limit)]
    pos = {k: i for i, k in enumerate(order)}
    for name, samples in sets.items():
        by_key = {}
        for s in samples:
            by_key.setdefault(_source_key(s), s)
        sets[name] = [by_key[k] for k in order]
    primary = sets.get("aligned") or sets["unaligned"]
    keys = group_keys(primary)  # subject / dup pseudo-subject / content hash of the source file
    split = split_samples(primary, parse_ratios(ratios), split_seed, keys=keys)
    assignment = {_source_key(s): s.split for s in split}
    result = {"n": len(order), "ratios": parse_ratios(ratios), "split_seed": split_seed, "limit": limit}
    for name, samples in sets.items():
        rows = [replace(s, split=assignment[_source_key(s)]) for s in samples]
        rows = _with_group_subjects(rows, keys)
        assert not split_violations(rows, keys)
        assert [pos[_source_key(s)] for s in rows] == list(range(len(rows)))
        folder = out / "data" / name
        path = folder / "manifest.csv"
        fp = data_fingerprint(rows)
        if path.is_file():
            old = data_fingerprint(read_manifest(path).samples)
            if old["sha256"] != fp["sha256"]:
                raise ConfigError(f"{path} exists with other rows (data or split options changed); "
                                  "use a new --out folder or delete it")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            if name == "aligned" and prep_json is not None:
                shutil.copy2(prep_json, folder / "prepare.json")
            write_manifest(rows, path)
        counts = {n: sum(1 for s in rows if s.split == n) for n in ("train", "val", "test")}
        result[name] = {"manifest": str(path), "source": str(aligned if name == "aligned" else unaligned),
                        "fingerprint": fp, "counts": counts}
    if "test" not in parse_ratios(ratios):
        raise ConfigError(f"ratios {ratios!r} have no test part; the ablation scores each run on test rows")
    if not quiet:
        c = result[next(iter(sets))]["counts"]
        print(f"data: {len(order)} images in both sets -> train {c['train']}, val {c['val']}, test {c['test']}")
    return result


# -- one run ---------------------------------------------------------------------------------------
def variant_config(base: Config, variant: str, manifest: str | Path, seed: int) -> Config:
    return base.override(VARIANTS[variant]["overrides"]).override(
        {"data": {"manifest": str(manifest), "path": None, "limit": None}, "run": {"seed": int(seed)}})


def evaluate_split(run_dir: str | Path, split: str = "test", weights: str = "best.safetensors",
                   cfg: Config | None = None) -> dict:
    """Score a finished run's weights on one split of its split.csv (the cached arrays, as in training)."""
    from faceage.metrics import age_metrics
    from faceage.runtime.torch_backend import TorchBackend
    from faceage.core.scoring import score
    from faceage.data.sets import cached_splits
    from faceage.train.distributed import pick_device

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = load_config(run_dir / "config.yaml")
    samples = read_manifest(run_dir / "split.csv").samples
    data = cached_splits(samples, int(cfg.data.input_size), cfg.data.cache_dir, quiet=True)
    if split not in data:
        raise FaceageError(f"{run_dir}: no {split!r} rows in split.csv")
    device = pick_device(cfg.run.device)
    part = data[split]
    pred = score(TorchBackend(run_dir / weights, device=str(device)), part.images, cfg.eval.tta).age
    report = age_metrics(pred, part.ages)
    report["split"] = split
    report["tta"] = cfg.eval.tta
    report["pred"] = [round(float(p), 3) for p in pred]
    report["true"] = [int(a) for a in part.ages]
    report["paths"] = [Path(s.source or s.path).name for s in part.samples]
    return report


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_one(cfg: Config, run_dir: Path, quiet: bool = True, stop_at_step: int | None = None) -> dict:
    """Train (or resume, or skip) one run, then score it on its test rows (test.json)."""
    from faceage.train.loop import train

    test_json = run_dir / "test.json"
    if not (run_dir / "summary.json").is_file():
        resume = (run_dir / "last.pt").is_file()
        train(cfg, run_dir, resume=resume, quiet=quiet, stop_at_step=stop_at_step)
    if not test_json.is_file():
        test = evaluate_split(run_dir, "test", cfg=cfg)
        tmp = test_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(test))
        tmp.replace(test_json)
    return json.loads(test_json.read_text())


# -- the grid --------------------------------------------------------------------------------------
def run_ablation(base: Config, out: str | Path, aligned=None, unaligned=None, unaligned_format: str | None = None,
                 variants: list[str] | None = None, seeds: int | list[int] = 33, ratios: str = "7:2:1",
                 split_seed: int = 0, limit: int | None = None, command: str | None = None, quiet: bool = True,
                 stop_at_step: int | None = None, max_runs: int | None = None) -> dict:
    """Run (or finish) the grid; write OUT/report. ``max_runs``: stop after training that many new runs."""
    out = Path(out)
    variants = list(variants or VARIANTS)
    for v in variants:
        if v not in VARIANTS:
            raise ConfigError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    need = {"aligned" if VARIANTS[v]["aligned"] else "unaligned" for v in variants}
    if "aligned" in need and not aligned:
        raise ConfigError(f"variants {[v for v in variants if VARIANTS[v]['aligned']]} need --aligned MANIFEST")
    if "unaligned" in need and not unaligned:
        raise ConfigError(f"variants {[v for v in variants if not VARIANTS[v]['aligned']]} need --unaligned DATA")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    data = prepare_data(out, aligned if "aligned" in need else None, unaligned if "unaligned" in need else None,
                        unaligned_format, ratios, split_seed, limit, quiet=False)
    state = {"base_config": base.to_dict(), "variants": variants, "seeds": seed_list, "data": data, "command": command}
    (out / "ablation.json").write_text(json.dumps(state, indent=2, default=str))
    trained = 0
    total = len(seed_list) * len(variants)
    done = 0
    for seed in seed_list:  # seed-major: an interrupted grid still has every variant for its first seeds
        for v in variants:
            run_dir = out / "runs" / v / f"seed-{seed}"
            finished = (run_dir / "test.json").is_file()
            if not finished and max_runs is not None and trained >= max_runs:
                continue
            cfg = variant_config(base, v, data["aligned" if VARIANTS[v]["aligned"] else "unaligned"]["manifest"], seed)
            t0 = time.perf_counter()
            was_done = (run_dir / "summary.json").is_file()
            res = run_one(cfg, run_dir, quiet=quiet, stop_at_step=stop_at_step)
            done += 1
            if not was_done:
                trained += 1
            print(f"[{done}/{total}] {v} seed {seed}: test MAE {res['mae']:.3f}"
                  + ("  (already done)" if was_done else f"  ({time.perf_counter() - t0:.0f}s)"), flush=True)
    return write_ablation_report(out, command=command)


def collect(out: Path) -> dict[str, list[dict]]:
    state = json.loads((out / "ablation.json").read_text())
    runs: dict[str, list[dict]] = {}
    for v in state["variants"]:
        for seed in state["seeds"]:
            run_dir = out / "runs" / v / f"seed-{seed}"
            if (run_dir / "test.json").is_file():
                test = json.loads((run_dir / "test.json").read_text())
                summary = json.loads((run_dir / "summary.json").read_text())
                runs.setdefault(v, []).append({"seed": seed, "dir": run_dir, "test": test, "summary": summary,
                                               "metrics": _read_metrics(run_dir)})
    return runs


def _box_plot(maes: dict[str, list[float]], path: Path) -> None:
    from faceage.metrics import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = list(maes)
    ax.boxplot([maes[k] for k in labels], showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=15, fontsize=8)
    for i, k in enumerate(labels, start=1):
        ax.scatter(np.full(len(maes[k]), i) + np.linspace(-0.08, 0.08, len(maes[k])), maes[k], s=10, alpha=0.6)
    ax.set(ylabel="test MAE (years)", title="Test MAE over repeated runs (cf. paper Fig. 11)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_plot(runs: dict[str, list[dict]], path: Path) -> None:
    from faceage.metrics import _pyplot

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (v, rs) in enumerate(runs.items()):
        c = colors[i % len(colors)]
        for j, r in enumerate(rs):
            ep = [int(m["epoch"]) for m in r["metrics"]]
            lab = v if j == 0 else None
            ax1.plot(ep, [float(m["train_loss"]) for m in r["metrics"]], color=c, alpha=0.6, label=lab)
            ax1.plot(ep, [float(m["val_loss"]) for m in r["metrics"]], color=c, alpha=0.6, ls="--")
            ax2.plot(ep, [float(m["val_mae_dex"]) for m in r["metrics"]], color=c, alpha=0.6, label=lab)
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss (solid: train, dashed: validation)")
    ax2.set(xlabel="epoch", ylabel="MAE (years)", title="Validation MAE per epoch (every run)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_ablation_report(out: str | Path, report_dir: str | Path | None = None, command: str | None = None) -> dict:
    """Table (mean, std, variance of test MAE per variant), box plot, CS curves, curves -> OUT/report."""
    from faceage.metrics import age_metrics, plot_cs_curves
    from faceage.train.setup import model_spec

    out = Path(out)
    rdir = Path(report_dir) if report_dir else out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    state = json.loads((out / "ablation.json").read_text())
    runs = collect(out)
    rows, table, maes, cs = [], {}, {}, {}
    for v in state["variants"]:
        rs = runs.get(v, [])
        if not rs:
            continue
        m = [r["test"]["mae"] for r in rs]
        pred = np.concatenate([r["test"]["pred"] for r in rs])
        true = np.concatenate([r["test"]["true"] for r in rs])
        pooled = age_metrics(pred, true)
        std = statistics.stdev(m) if len(m) > 1 else float("nan")
        var = statistics.variance(m) if len(m) > 1 else float("nan")
        val = [r["summary"]["best_val_mae"] for r in rs]
        table[v] = {"runs": len(m), "mae_mean": round(statistics.fmean(m), 4), "mae_std": round(std, 4),
                    "mae_var": round(var, 4), "mae_min": round(min(m), 4), "mae_max": round(max(m), 4),
                    "val_mae_mean": round(statistics.fmean(val), 4), "cs5_pooled": pooled["cs"]["5"],
                    "test_mae": {str(r["seed"]): r["test"]["mae"] for r in rs},
                    "paper_morph2": PAPER_MAE.get(v)}
        maes[v] = m
        cs[v] = pooled["cs"]
        paper = PAPER_MAE.get(v)
        rows.append([v, len(m), table[v]["mae_mean"], std, var, min(m), max(m), table[v]["val_mae_mean"],
                     pooled["cs"]["5"], f"{paper[0]:.2f} ({paper[1]:.3f})" if paper else "-"])
    images = []
    if maes:
        _box_plot(maes, rdir / "box_test_mae.png")
        plot_cs_curves(cs, rdir / "cs_curves.png", "Test CS, all runs pooled (cf. paper Fig. 12)")
        _curve_plot(runs, rdir / "curves_all_runs.png")
        images = ["box_test_mae.png", "cs_curves.png", "curves_all_runs.png"]
        cdir = rdir / "curves"
        cdir.mkdir(exist_ok=True)
        for v, rs in runs.items():
            for r in rs:
                src = r["dir"] / "curves.png"
                if src.is_file():
                    shutil.copy2(src, cdir / f"{v}-seed{r['seed']}.png")
    base = load_config(overrides=state["base_config"])  # a state written before a key existed: its default
    d = state["data"]
    counts = next(d[k]["counts"] for k in ("aligned", "unaligned") if k in d)
    body = [
        f"{sum(len(r) for r in runs.values())} finished runs: {len(state['variants'])} variants x "
        f"{len(state['seeds'])} seeds planned. Each run trains on the same {counts['train']} training images, "
        f"keeps its best epoch by validation MAE ({counts['val']} images) and is scored on "
        f"{counts['test']} held-out test images (subject/duplicate-exclusive split, seed {d['split_seed']}).",
        "",
        f"Base config: {model_spec(base).name}, {base.data.input_size} px, "
        f"{base.optim.epochs} epochs, batch {base.optim.batch_size}, lr {base.optim.lr} "
        f"({base.optim.schedule}), lambda {base.loss.reg_weight}.",
        "",
        "## Test MAE per variant",
        "",
        md_table(["variant", "runs", "mean MAE", "std", "variance", "min", "max", "mean val MAE", "CS(5)",
                  "paper MORPH2 mean (var)"], rows),
        "",
        "Per-run training curves: `curves/VARIANT-seedK.png`.",
    ]
    prov = provenance(command if command is not None else state.get("command"), base.to_dict(),
                      data={k: d[k]["fingerprint"] for k in ("aligned", "unaligned") if k in d})
    return write_report(rdir, "Ablation: MA-SFV2 variants x seeds", "\n".join(body),
                        {"variants": table, "data": d, "seeds": state["seeds"]}, prov, images)
