"""Research protocols on tiny synthetic data: split invariants, resumable grids and folds, reports."""
import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import synthetic_dataset, tiny_config
from faceage.data.manifest import read_manifest
from faceage.errors import ConfigError
from faceage.data.split import group_keys

PROVENANCE_KEYS = {"command", "code", "config", "data", "date"}


def _rewrite(manifest: Path, subject=lambda i: f"s{i // 2}") -> Path:
    rows = list(csv.DictReader(open(manifest)))
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age", "subject"])
        for i, r in enumerate(rows):
            w.writerow([r["path"], r["age"], subject(i) or ""])
    return manifest


def _check_report(folder: Path, extra_keys=()) -> dict:
    assert (folder / "report.md").is_file()
    doc = json.loads((folder / "report.json").read_text())
    assert {"title", "provenance", "results", "images"} <= set(doc)
    assert PROVENANCE_KEYS <= set(doc["provenance"])
    assert "faceage" in doc["provenance"]["code"]
    for img in doc["images"]:
        assert (folder / img).is_file() and (folder / img).stat().st_size > 1000, img
        assert f"]({img})" in (folder / "report.md").read_text()
    assert set(extra_keys) <= set(doc["results"])
    assert "## Provenance" in (folder / "report.md").read_text()
    return doc


# -- split -----------------------------------------------------------------------------------------
def test_parse_ratios():
    from faceage.errors import ConfigError
    from faceage.experiments.split import parse_ratios

    assert parse_ratios("7:2:1") == {"train": 7, "val": 2, "test": 1}
    assert parse_ratios("7:2") == {"train": 7, "val": 2}
    assert parse_ratios("train=8,val=1,test=1") == {"train": 8, "val": 1, "test": 1}
    with pytest.raises(ConfigError):
        parse_ratios("0:1:1")


def test_split_subject_exclusive_in_place_with_backup(tmp_path):
    from faceage.experiments.split import split_manifest, split_violations

    m = _rewrite(synthetic_dataset(tmp_path / "d", n=200, size=8), lambda i: f"s{i // 3}")
    original = m.read_text()
    res = split_manifest(m, ratios="7:2:1", seed=3)
    assert Path(res["backup"]).read_text() == original
    samples = read_manifest(m).samples
    assert len(samples) == 200
    assert not split_violations(samples)
    sides = defaultdict(set)
    for s in samples:
        sides[s.subject].add(s.split)
    assert all(len(v) == 1 for v in sides.values())
    counts = Counter(s.split for s in samples)
    for name, target in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(counts[name] / 200 - target) <= 0.03, counts  # groups of 3 -> within a group or two
    assert "train:" in res["histograms"] and "test:" in res["histograms"]
    # seeded: same seed -> same split; another seed -> another split
    again = split_manifest(m, tmp_path / "again.csv", "7:2:1", seed=3)
    assert [s.split for s in read_manifest(again["manifest"]).samples] == [s.split for s in samples]
    other = split_manifest(m, tmp_path / "other.csv", "7:2:1", seed=4)
    assert [s.split for s in read_manifest(other["manifest"]).samples] != [s.split for s in samples]


def test_split_keeps_byte_identical_duplicates_together(tmp_path):
    from faceage.experiments.split import split_manifest

    root = tmp_path / "d"
    m = _rewrite(synthetic_dataset(root, n=60, size=8), lambda i: None)  # no subject ids at all
    for i in range(0, 30, 3):  # ten pairs of byte-identical files, with different labels
        shutil.copy(root / f"img{i:03d}.png", root / f"img{i + 1:03d}.png")
    res = split_manifest(m, tmp_path / "out" / "m.csv", "7:2:1", seed=0)
    samples = read_manifest(res["manifest"]).samples
    by_name = {s.path.name: s.split for s in samples}
    for i in range(0, 30, 3):
        assert by_name[f"img{i:03d}.png"] == by_name[f"img{i + 1:03d}.png"]
    keys = group_keys(samples)
    assert len(set(keys)) == 50 and res["groups"] == 50


def test_split_cli(tmp_path, capsys):
    from faceage.cli import main

    m = synthetic_dataset(tmp_path / "d", n=40, size=8)
    assert main(["experiment", "split", str(m), "--ratios", "7:2:1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "val:" in out and "backup" in out
    assert {s.split for s in read_manifest(m).samples} == {"train", "val", "test"}


# -- ablation --------------------------------------------------------------------------------------
def _two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """An 'unaligned' manifest and an 'aligned' copy (prepare.json, source column) of the same images."""
    raw = synthetic_dataset(tmp_path / "raw", n=60, size=24)
    _rewrite(raw, lambda i: None)
    adir = tmp_path / "aligned"
    (adir / "images").mkdir(parents=True)
    with open(adir / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age", "subject", "split", "source"])
        for r in csv.DictReader(open(raw)):
            shutil.copy(raw.parent / r["path"], adir / "images" / r["path"])
            w.writerow([f"images/{r['path']}", r["age"], "", "", str((raw.parent / r["path"]).resolve())])
    (adir / "prepare.json").write_text(json.dumps({"crop_spec": {"size": 24, "eye_distance": 0.34, "eye_y": 0.38,
                                                                 "margin": 0.0}}))
    return adir / "manifest.csv", raw


def test_ablation_resumes_and_reports(tmp_path, capsys):
    from faceage.experiments.ablation import run_ablation

    aligned, unaligned = _two_versions(tmp_path)
    base = tiny_config(aligned, tmp_path / "cache", **{"optim.epochs": 2})
    out = tmp_path / "abl"
    kw = dict(aligned=aligned, unaligned=unaligned, variants=["sfv2_l1", "align_ma_sfv2_l1", "no_augmentation"],
              seeds=2, ratios="6:2:2", command="faceage experiment ablation (test)")
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the first run's second epoch
        run_ablation(base, out, stop_at_step=7, **kw)
    first = out / "runs" / "sfv2_l1" / "seed-0"
    assert (first / "last.pt").is_file() and not (first / "summary.json").exists()
    # the two data sets share one split (same source files on the same side)
    a = {Path(s.source).name: s.split for s in read_manifest(out / "data" / "aligned" / "manifest.csv").samples}
    u = {s.path.name: s.split for s in read_manifest(out / "data" / "unaligned" / "manifest.csv").samples}
    assert a == u and set(a.values()) == {"train", "val", "test"}
    # a second start stops after two more runs; the third start finishes the rest
    run_ablation(base, out, max_runs=2, **kw)
    rows = list(csv.DictReader(open(first / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # resumed after epoch 1, not restarted
    doc = run_ablation(base, out, **kw)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    assert len(stamps) == 6
    capsys.readouterr()
    run_ablation(base, out, **kw)  # everything finished: nothing is retrained
    assert capsys.readouterr().out.count("already done") == 6
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    cfg = yaml.safe_load((out / "runs/no_augmentation/seed-1/config.yaml").read_text())
    assert cfg["augment"]["flip"] == 0 and cfg["augment"]["noise"] == 0 and cfg["run"]["seed"] == 1
    assert yaml.safe_load((out / "runs/sfv2_l1/seed-0/config.yaml").read_text())["model"]["arch"] == "sfv2"
    rep = _check_report(out / "report", ["variants", "data", "seeds"])
    table = rep["results"]["variants"]
    assert set(table) == {"sfv2_l1", "align_ma_sfv2_l1", "no_augmentation"}
    for v in table.values():
        assert v["runs"] == 2 and {"mae_mean", "mae_std", "mae_var"} <= set(v)
    assert set(rep["images"]) == {"box_test_mae.png", "cs_curves.png", "curves_all_runs.png"}
    assert len(list((out / "report" / "curves").glob("*.png"))) == 6
    assert set(rep["provenance"]["data"]) == {"aligned", "unaligned"}
    assert rep["provenance"]["command"] == "faceage experiment ablation (test)"
    assert doc["results"]["variants"] == table


# -- leave-one-person-out ----------------------------------------------------------------------------
def test_lopo_cli_runs_folds_in_parallel_processes_one_thread_each(tmp_path):
    """--jobs 2: two folds at once, each process on one thread unless the config says otherwise."""
    from faceage.cli import main
    from faceage.train.config import dump_config

    m = _rewrite(synthetic_dataset(tmp_path / "d", n=24, size=24), lambda i: f"p{i // 6}")  # 4 subjects
    cfg = tmp_path / "tiny.yaml"
    dump_config(tiny_config(m, tmp_path / "cache", **{"optim.epochs": 1, "run.threads": None}), cfg)
    out = tmp_path / "lopo"
    assert main(["experiment", "lopo", str(m), "--config", str(cfg), "--out", str(out), "--jobs", "2",
                 "--folds", "2"]) == 0
    assert sorted(p.parent.name for p in out.glob("folds/*/fold.json")) == ["p0", "p1"]
    for fold in ("p0", "p1"):
        assert yaml.safe_load((out / f"folds/{fold}/run/config.yaml").read_text())["run"]["threads"] == 1


def test_lopo_fine_tunes_resumes_fold_by_fold_and_reports(tmp_path, capsys):
    from faceage.experiments.lopo import run_lopo
    from faceage.train.loop import train

    m = _rewrite(synthetic_dataset(tmp_path / "d", n=30, size=24), lambda i: f"p{i // 6}")  # 5 subjects
    cache = tmp_path / "cache"
    start = tmp_path / "start"
    train(tiny_config(m, cache, **{"optim.epochs": 1}), start, quiet=True)
    base = tiny_config(m, cache, **{"optim.epochs": 2, "optim.lr": 0.0005, "optim.backbone_lr_scale": 0.5})
    out = tmp_path / "lopo"
    kw = dict(init=start / "best.safetensors", val_frac=0.25, command="faceage experiment lopo (test)")
    run_lopo(base, m, out, max_folds=2, **kw)
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("folds/*/fold.json")}
    assert sorted(done) == ["p0", "p1"]
    with pytest.raises(KeyboardInterrupt):  # the third fold is killed in its second epoch
        run_lopo(base, m, out, stop_at_step=3, **kw)
    assert (out / "folds/p2/run/last.pt").is_file() and not (out / "folds/p2/fold.json").exists()
    capsys.readouterr()
    doc = run_lopo(base, m, out, **kw)
    assert "2 already done, 3 to run" in capsys.readouterr().out
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("folds/*/fold.json")} | done == \
        {p.parent.name: p.stat().st_mtime_ns for p in out.glob("folds/*/fold.json")}
    assert [r["epoch"] for r in csv.DictReader(open(out / "folds/p2/run/metrics.csv"))] == ["1", "2"]
    assert not (out / "folds/p3/run/last.pt").exists()  # heavy files dropped once a fold is scored
    for subj in ("p0", "p4"):  # the held-out subject is only in its fold's test rows
        rows = read_manifest(out / "data" / f"fold-{subj}.csv").samples
        assert {s.split for s in rows if s.subject == subj} == {"test"}
        assert "test" not in {s.split for s in rows if s.subject != subj}
    rep = _check_report(out / "report", ["mae", "per_fold_mae", "folds", "zero_shot"])
    r = rep["results"]
    assert r["n_folds_done"] == 5 and r["overall"]["n"] == 30 and len(r["folds"]) == 5
    assert r["init"]["crop_check"] == "match"
    assert "; backbone at lr x 0.5)" in (out / "report/report.md").read_text()
    assert len(list(csv.DictReader(open(out / "report/predictions.csv")))) == 30
    assert doc["results"]["mae"] == r["mae"]
    from faceage.cli import main

    assert main(["experiment", "lopo", str(m), "--out", str(out), "--report-only", "--folds", "2"]) == 0
    part = json.loads((out / "report-first2/report.json").read_text())["results"]
    assert part["n_folds_done"] == 2 and part["overall"]["n"] == 12 and "report-first2" in capsys.readouterr().out
    assert part["zero_shot"] is None  # it covers all 30 images: not beside 2 folds
    assert "The first 2 of 5 folds only" in (out / "report-first2/report.md").read_text()


def test_lopo_extra_training_rows_join_every_fold_and_are_never_scored(tmp_path):
    from faceage.experiments.lopo import run_lopo

    m = _rewrite(synthetic_dataset(tmp_path / "d", n=12, size=24), lambda i: f"p{i // 4}")  # 3 subjects
    extra = synthetic_dataset(tmp_path / "x", n=60, size=24, seed=1)
    rows = list(csv.DictReader(open(extra)))
    with open(extra, "w", newline="") as fh:  # a split column: the last 20 rows are validation rows
        w = csv.writer(fh)
        w.writerow(["path", "age", "split"])
        w.writerows([r["path"], r["age"], "train" if i < 40 else "val"] for i, r in enumerate(rows))
    eligible = {Path(r["path"]).name: int(r["age"]) for r in rows[:40] if int(r["age"]) >= 20}
    want = sum(min(2, n) for n in Counter(a // 10 for a in eligible.values()).values())
    out = tmp_path / "lopo"
    doc = run_lopo(tiny_config(m, tmp_path / "cache", **{"optim.epochs": 1}), m, out, val_frac=0.34,
                   extra_train=extra, extra_per_decade=2, extra_min_age=20, command="faceage experiment lopo (test)")
    picked = None
    for subj in ("p0", "p1", "p2"):
        fold = read_manifest(out / "data" / f"fold-{subj}.csv").samples
        added = [s for s in fold if not s.subject]
        assert {s.split for s in added} == {"train"} and len(added) == want
        assert all(Path(s.path).name in eligible for s in added)
        assert max(Counter(s.age // 10 for s in added).values()) <= 2
        assert {s.split for s in fold if s.subject == subj} == {"test"}
        names = sorted(Path(s.path).name for s in added)
        assert picked in (None, names)  # the same rows in every fold
        picked = names
    r = doc["results"]
    assert r["overall"]["n"] == 12 and sum(f["n"] for f in r["folds"]) == 12  # only the subjects' images are scored
    assert json.loads((out / "lopo.json").read_text())["extra_train"]["rows"] == want
    assert f"{want} rows of" in (out / "report/report.md").read_text()
    with pytest.raises(ConfigError, match="other settings .*extra_train"):  # the folds were made with other rows
        run_lopo(tiny_config(m, tmp_path / "cache", **{"optim.epochs": 1}), m, out, val_frac=0.34,
                 extra_train=extra, extra_per_decade=3, extra_min_age=20)
    from faceage.cli import main

    assert main(["experiment", "lopo", str(m), "--out", str(tmp_path / "x"), "--extra-min-age", "20"]) != 0


def test_lopo_refuses_crop_mismatch(tmp_path):
    from faceage.face.align import CropSpec
    from faceage.data.sets import crop_differences as check_crop

    assert check_crop(CropSpec(128, 0.34, 0.38, 0.0), CropSpec(112, 0.34, 0.38, 0.0)) == []
    assert check_crop(CropSpec(112, 0.30, 0.38, 0.0), CropSpec(112, 0.34, 0.38, 0.0))
    assert check_crop(None, CropSpec(112, 0.34, 0.38, 0.0))


def test_lopo_runs_from_a_bundled_model_by_name(tmp_path):
    """--init fast: the name is kept as given (the experiment's key), its file scores the zero-shot baseline and
    every fold starts from it."""
    from faceage.experiments.lopo import run_lopo
    from faceage.models import locate

    m = _rewrite(synthetic_dataset(tmp_path / "d", n=12, size=24), lambda i: f"p{i // 4}")  # 3 subjects
    base = tiny_config(m, tmp_path / "cache", **{"optim.epochs": 1, "optim.batch_size": 4})
    out = tmp_path / "lopo"
    run_lopo(base, m, out, init="fast", val_frac=0.34, max_folds=1, allow_crop_mismatch=True, command="test")
    state = json.loads((out / "lopo.json").read_text())
    assert state["init"]["path"] == "fast" and state["init"]["file"] == str(locate("fast", backend="torch"))
    assert state["base_config"]["model"]["init"] == "fast" and state["base_config"]["data"]["input_size"] == 112
    assert json.loads((out / "zero_shot.json").read_text())["n"] == 12
    assert (out / "folds" / "p0" / "fold.json").is_file()


def test_lopo_folds_start_from_a_bundled_model_and_a_campaign_config(tmp_path):
    """--init NAME resolves to the bundled file; a base config naming several data sets (the accurate
    campaign's) reads each fold's manifest instead of them."""
    from faceage.experiments.lopo import fold_config, fold_data
    from faceage.train.config import load_config

    cfg, init = fold_config(load_config(Path(__file__).parents[1] / "configs" / "accurate.yaml"), "fast")
    assert init["path"] == "fast" and cfg.model.init == "fast" and cfg.model.width == 0.5
    fold = fold_data(cfg, tmp_path / "fold-1.csv")
    assert fold.data.manifest == str(tmp_path / "fold-1.csv") and fold.data.datasets is None and fold.data.mix is None


# -- compare ---------------------------------------------------------------------------------------
def test_compare_side_by_side(tmp_path):
    from faceage.experiments.compare import run_compare
    from faceage.train.loop import train

    m = synthetic_dataset(tmp_path / "d", n=30, size=24)
    cache = tmp_path / "cache"
    train(tiny_config(m, cache, **{"optim.epochs": 1}), tmp_path / "a", quiet=True)
    train(tiny_config(m, cache, **{"optim.epochs": 1, "model.arch": "sfv2"}), tmp_path / "b", quiet=True)
    out = tmp_path / "cmp"
    run_compare([str(tmp_path / "a"), f"plain={tmp_path / 'b' / 'best.safetensors'}"], m, out, command="x")
    rep = _check_report(out, ["models", "best", "n"])
    assert set(rep["results"]["models"]) == {"a", "plain"}
    assert rep["results"]["n"] == 30 and rep["images"] == ["cs_curves.png"]
    header = next(csv.reader(open(out / "predictions.csv")))
    assert header == ["path", "age", "a", "plain"]
