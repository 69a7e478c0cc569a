import csv
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from faceage.errors import ConfigError, ManifestError
from faceage.train.config import load_config, parse_override
from faceage.train.loop import Trainer, train


def test_presets_and_overrides():
    paper = load_config("paper")
    assert paper.model.to_dict() == {"arch": "ma_sfv2", "width": 2.0, "se_reduction": 4, "init": None}
    assert paper.data.input_size == 224 and paper.optim.batch_size == 128
    assert paper.optim.epochs == 80 and paper.optim.lr == 0.001 and paper.loss.reg_weight == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.optim.lr = 0.1  # a config is never changed in place: override() makes a new, checked one
    assert paper.override({"optim": {"lr": 0.1}}).optim.lr == 0.1 and paper.optim.lr == 0.001
    assert load_config(overrides=paper.to_dict()) == paper  # the plain form (config.yaml) reads back the same
    cfg = load_config("cpu", ["optim.lr=0.5", "model.width=1.0"])
    assert cfg.optim.lr == 0.5 and cfg.model.width == 1.0
    assert parse_override("augment.scale_range=[0.8, 1.2]") == {"augment": {"scale_range": [0.8, 1.2]}}
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("cpu", ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-preset")
    assert load_config("paper", ["run.compile=reduce-overhead"]).run.compile == "reduce-overhead"
    with pytest.raises(ConfigError, match="run.compile = 'fast': must be one of"):
        load_config("paper", ["run.compile=fast"])


@pytest.mark.parametrize("override, message", [
    ("optim.epochs=abc", "optim.epochs = 'abc': must be a whole number"),
    ("augment.flip=2.5", "augment.flip = 2.5: must be in 0..1"),
    ("optim.lr=-1", "optim.lr = -1: must be > 0"),
    ("eval.estimate=mode", "eval.estimate = 'mode': must be one of dex, reg, mean, median"),
    ("eval.tta=zoom", "did you mean zoomflip"),
    ("optim.lrr=0.1", "did you mean optim.lr"),
    ("data.mix={a: -1}", "data.mix"),
    ("augment.jpeg_quality=[80, 20]", "augment.jpeg_quality"),
    ("model.width=0.7", "model.width"),
    ("optim.head_only_epochs=-1", "optim.head_only_epochs"),
])
def test_bad_config_values_fail_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cpu", [override])


def test_two_data_sources_are_refused_not_one_ignored():
    with pytest.raises(ConfigError, match="data.manifest, data.path: set one of"):
        load_config("cpu", ["data.manifest=a.csv", "data.path=photos/"])


def test_a_run_reads_ages_with_the_median_when_asked(tiny_manifest, tmp_path):
    """eval.estimate=median: every estimate is in metrics.csv and the best epoch is chosen on the median's MAE."""
    from faceage.models.weights import read_record

    out = tmp_path / "run"
    summary = train(tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 1, "eval.estimate": "median"}),
                    out, quiet=True)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {"val_mae_dex", "val_mae_reg", "val_mae_mean", "val_mae_median"} <= set(rows[0])
    assert summary["best_val_mae"] == pytest.approx(float(rows[0]["val_mae_median"]))
    assert read_record(out / "best.safetensors").estimate == "median"


def test_training_writes_run_folder(tiny_manifest, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_manifest, tmp_path / "cache"), out, quiet=True)
    for name in ("config.yaml", "split.csv", "metrics.csv", "curves.png", "last.pt", "best.safetensors",
                 "cs_curve.png", "error_by_age.png", "summary.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_mae_dex", "val_mae_reg", "lr"} <= set(rows[0])
    assert summary["val"]["n"] > 0 and "5" in summary["val"]["cs"]
    # no subject straddles train and val
    split = list(csv.DictReader(open(out / "split.csv")))
    sides = {}
    for r in split:
        sides.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(v) == 1 for v in sides.values())


def test_killed_run_resumes_to_the_same_weights(tiny_manifest, tmp_path):
    cfg = tiny_config(tiny_manifest, tmp_path / "cache")
    train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of epoch 2
        train(cfg, tmp_path / "killed", quiet=True, stop_at_step=5)
    assert (tmp_path / "killed" / "last.pt").is_file()
    train(cfg, tmp_path / "killed", resume=True, quiet=True)
    a = load_file(tmp_path / "full" / "last.safetensors")
    b = load_file(tmp_path / "killed" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = list(csv.DictReader(open(tmp_path / "killed" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_bad_rows_and_corrupt_images_are_skipped(tiny_manifest, tmp_path, capsys):
    root = tiny_manifest.parent
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(tiny_manifest, "a") as fh:
        fh.write("missing.png,30,x\nimg000.png,abc,x\nimg001.png,150,x\nbroken.png,40,y\n")
    trainer = Trainer(tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 1}), tmp_path / "run")
    trainer.fit()
    out = capsys.readouterr().out + capsys.readouterr().err
    assert "missing.png" in out and "abc" in out and "150" in out
    assert sum(len(s.ages) for s in trainer.data.values()) == 48  # the broken image was left out


def test_manifest_without_usable_rows_is_a_clear_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,age\nnope.jpg,30\n")
    with pytest.raises(ManifestError, match="no usable row"):
        train(tiny_config(bad, tmp_path / "cache"), tmp_path / "run", quiet=True)


def test_best_weights_record_travels(tiny_manifest, tmp_path):
    from faceage.models.weights import read_record

    train(tiny_config(tiny_manifest, tmp_path / "cache"), tmp_path / "run", quiet=True)
    rec = read_record(tmp_path / "run")
    assert rec.input_size == 32 and rec.model.arch == "ma_sfv2"
    assert rec.training["n_train"] + rec.training["n_val"] == 48
    assert json.loads(rec.to_json())["format"] == 1


def test_model_init_starts_from_a_model_file(tiny_manifest, tmp_path):
    """model.init: a second run starts from the first run's weights; a different network is refused."""
    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 1})
    train(cfg, tmp_path / "first", quiet=True)
    start = tmp_path / "first" / "best.safetensors"
    trainer = Trainer(tiny_config(tiny_manifest, tmp_path / "cache", **{"model.init": str(start)}), tmp_path / "two")
    trainer.setup()
    weights = load_file(start)
    state = trainer.model.state_dict()
    for k, v in weights.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)
    assert trainer.record.training["init"] == str(start)
    fresh = Trainer(tiny_config(tiny_manifest, tmp_path / "cache"), tmp_path / "fresh")
    fresh.setup()
    assert any(not torch.equal(fresh.model.state_dict()[k], v) for k, v in weights.items())
    wider = tiny_config(tiny_manifest, tmp_path / "cache", **{"model.init": str(start), "model.width": 1.0})
    with pytest.raises(ConfigError, match="model.init .* set model"):
        Trainer(wider, tmp_path / "three").setup()
    named = tiny_config(tiny_manifest, tmp_path / "cache", **{"model.init": "fast"})  # a bundled model, by name
    with pytest.raises(ConfigError, match="model.init fast: it is .*'width': 0.5.* at 112 px"):
        Trainer(named, tmp_path / "four").setup()


def test_backbone_lr_scale_slows_the_backbone_not_the_head(tiny_manifest, tmp_path):
    """optim.backbone_lr_scale: two parameter groups, the backbone's lr scaled; 0 is refused."""
    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 1, "optim.lr": 0.002,
                                                            "optim.backbone_lr_scale": 0.25})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    trainer.setup()
    head = {id(p) for p in trainer.model.head.parameters()}
    groups = trainer.optimizer.param_groups
    assert [{id(p) for p in g["params"]} == head for g in groups] == [False, True]
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.model.parameters()))
    trainer.train_epoch()
    assert [g["lr"] for g in groups] == pytest.approx([0.0005, 0.002])
    plain = Trainer(tiny_config(tiny_manifest, tmp_path / "cache"), tmp_path / "one")
    plain.setup()
    assert len(plain.optimizer.param_groups) == 1  # checkpoints of earlier runs still resume
    for bad in ("0", "abc", "null"):
        with pytest.raises(ConfigError, match="backbone_lr_scale"):
            load_config("cpu", [f"optim.backbone_lr_scale={bad}"])
    trainer.save_checkpoint()  # resuming with another scale would silently keep the old one: refused
    for other in (1.0, 0.5):
        again = Trainer(tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.backbone_lr_scale": other}),
                        tmp_path / "run", quiet=True)
        again.setup()
        with pytest.raises(ConfigError, match="backbone_lr_scale=0.25"):
            again.load_checkpoint()


def test_two_datasets_split_apart_scored_apart_and_balanced(tmp_path):
    """data.datasets: each data set split on its own and tagged; per-data-set validation MAE in the metrics;
    data.mix / data.age_balance draw rows with replacement as configured; the interval is calibrated."""
    import numpy as np

    from conftest import synthetic_dataset
    from faceage.data.sets import prior_correction, sampling_weights

    a, b = synthetic_dataset(tmp_path / "a", n=40), synthetic_dataset(tmp_path / "b", n=24, seed=1)
    cfg = tiny_config(a, tmp_path / "cache", **{"data.manifest": None}).override({
        "data": {"datasets": {"alpha": str(a), "beta": str(b)}, "mix": {"alpha": 1, "beta": 1}, "age_balance": 1.0},
        "augment": {"old_photo": 0.5, "jpeg": 0.5}})
    out = tmp_path / "run"
    summary = train(cfg, out, quiet=True)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {"val_mae_alpha", "val_mae_beta"} <= set(rows[0])
    assert set(summary["val"]["by_dataset"]) == {"alpha", "beta"}
    assert 0.5 <= summary["record"]["interval_temperature"] <= 4.0
    strength = summary["record"]["training"]["prior_correction"]["strength"]
    assert (summary["record"]["logit_bias"] is None) == (strength == 0)
    assert strength == 0 or len(summary["record"]["logit_bias"]) == 101
    # a finished run resumed with another eval.prior_select only chooses the strength again, by that measure
    again = train(cfg.override({"eval": {"prior_select": "balanced_mae"}}), out, resume=True, quiet=True)
    chosen = again["record"]["training"]["prior_correction"]
    balanced = chosen["val_balanced_mae_by_strength"]
    assert chosen["chosen_by"] == "balanced_mae" and balanced[str(chosen["strength"])] == min(balanced.values())
    assert again["epochs"] == summary["epochs"] and again["val"]["mae_balanced"] >= 0
    split = list(csv.DictReader(open(out / "split.csv")))
    assert {r["dataset"] for r in split} == {"alpha", "beta"}
    for name in ("alpha", "beta"):
        assert {r["split"] for r in split if r["dataset"] == name} == {"train", "val"}

    ages = np.array([1, 2, 3, 30, 31, 32, 33, 34, 35, 36, 60, 61])
    sets = np.array(["x"] * 10 + ["y"] * 2)
    w = sampling_weights(ages, sets, {"x": 3, "y": 1}, 1.0, 10)
    assert np.isclose(w.sum(), 1) and np.isclose(w[sets == "x"].sum(), 0.75)
    # age_balance 1: the 0-9 bin (3 rows) and the 30-39 bin (7 rows) of x get the same mass
    assert np.isclose(w[:3].sum(), w[3:10].sum())
    flat = sampling_weights(ages, sets, None, 0.0, 10)
    assert np.allclose(flat, 1 / len(ages))
    with pytest.raises(ConfigError, match="data.mix"):
        sampling_weights(ages, sets, {"x": 1}, 0.0, 10)
    # the prior correction undoes the drawn prior: none for uniform draws, + for ages drawn too rarely
    assert np.allclose(prior_correction(ages, flat), 0, atol=1e-5)
    delta = prior_correction(ages, w)
    # x's 30s: 7 of 12 rows, drawn at 37.5%: put back (+); y's 60s: 2 of 12 rows, drawn at 25%: (-)
    assert delta.shape == (101,) and delta[33] > 0 > delta[60]


def test_training_learns_a_learnable_task(tmp_path):
    """Brightness encodes the age (conftest.synthetic_dataset): after a few epochs the network must beat
    the best constant guess (the training median) on the validation split by a clear margin."""
    import numpy as np

    from conftest import synthetic_dataset

    manifest = synthetic_dataset(tmp_path / "data", n=200, size=32, seed=3)
    cfg = tiny_config(manifest, tmp_path / "cache", **{"optim.epochs": 8, "optim.batch_size": 16,
                                                       "optim.lr": 0.003, "eval.tta": "none"})
    cfg = cfg.override({"augment": {"noise": 0.0, "jitter": 0.0, "grey": 0.0, "blur": 0.0}})  # keep the brightness signal
    summary = train(cfg, tmp_path / "run", quiet=True)
    split = list(csv.DictReader(open(tmp_path / "run" / "split.csv")))
    train_ages = np.array([int(r["age"]) for r in split if r["split"] == "train"])
    val_ages = np.array([int(r["age"]) for r in split if r["split"] == "val"])
    constant = float(np.abs(val_ages - np.median(train_ages)).mean())
    print(f"validation MAE {summary['best_val_mae']:.2f} vs constant {constant:.2f}")
    assert summary["best_val_mae"] < 0.6 * constant


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_broken_last_checkpoint_falls_back_to_the_previous_one(tiny_manifest, tmp_path, damage):
    from faceage.errors import WeightsError

    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 2})
    out = tmp_path / "run"
    train(cfg, out, quiet=True)
    last, prev = out / "last.pt", out / "last.prev.pt"
    assert prev.is_file() and torch.load(prev, weights_only=True)["epoch"] == 1
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.warns(UserWarning, match="last.pt.*resuming from the previous checkpoint .*last.prev.pt"):
        state = Trainer.read_checkpoint(out)
    assert state["epoch"] == 1
    prev.write_bytes(b"")
    with pytest.raises(WeightsError, match="cannot resume: .*last.pt: .*last.prev.pt: "):
        train(cfg, out, resume=True, quiet=True)


def test_train_help_lists_every_key_from_the_declaration(capsys):
    from faceage.cli import main
    from faceage.train.config import KEYS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for section, keys in KEYS.items():
        for key, decl in keys.items():
            assert f"{section}.{key} = " in out and decl.help.split()[0] in out


def test_a_data_set_smaller_than_the_batch_is_refused(tiny_manifest, tmp_path, capsys):
    """Once, an epoch of len // batch_size = 0 steps trained nothing and saved an untrained best.safetensors."""
    from faceage.cli import main

    with pytest.raises(ManifestError, match="fewer than one batch"):
        train(tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.batch_size": 4096}), tmp_path / "run",
              quiet=True)
    assert not (tmp_path / "run" / "best.safetensors").exists()
    code = main(["train", "--config", "cpu", f"data.manifest={tiny_manifest}", "data.input_size=32",
                 f"data.cache_dir={tmp_path / 'cache'}", "optim.batch_size=4096", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "optim.batch_size" in err


def _opinionated_teacher(path, age: int, input_size: int):
    """A 'teacher' that puts nearly all its mass on ``age`` for any face (its classifier is a constant)."""
    from faceage.nets.model import create_model
    from faceage.models.weights import ModelRecord
    from faceage.models.write import save_model

    torch.manual_seed(0)
    model = create_model("ma_sfv2", 0.5).eval()
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.fill_(-5.0)
        model.head.fc.bias[age] = 5.0
    return save_model(model, ModelRecord(model=model.spec, input_size=input_size), path)


def test_distillation_pulls_the_student_to_the_teacher(tmp_path, capsys):
    """With all the loss on the teacher, a student follows a teacher that says 70 for everyone; without the
    teacher, the same run follows the labels (ages 1-89 from brightness). The teacher's logits are computed
    once and reused by a resumed run; the record says who taught."""
    import numpy as np
    from PIL import Image

    from conftest import synthetic_dataset
    from faceage.runtime.torch_backend import TorchBackend
    from faceage.core.scoring import score
    from faceage.models.weights import read_record

    manifest = synthetic_dataset(tmp_path / "data", n=64, size=32, seed=5)
    teacher = _opinionated_teacher(tmp_path / "teacher.safetensors", 70, 32)
    base = {"optim.epochs": 6, "optim.lr": 0.01, "eval.tta": "none"}
    runs = {"taught": tiny_config(manifest, tmp_path / "cache", **base, **{"distill.teacher": str(teacher),
                                                                            "distill.weight": 1.0}),
            "plain": tiny_config(manifest, tmp_path / "cache", **base)}
    gap = {}
    for name, cfg in runs.items():
        train(cfg, tmp_path / name, quiet=True)
        val = [r for r in csv.DictReader(open(tmp_path / name / "split.csv")) if r["split"] == "val"]
        crops = np.stack([np.asarray(Image.open(manifest.parent / r["path"]).convert("RGB")) for r in val])
        ages = score(TorchBackend(tmp_path / name / "best.safetensors"), crops, "none").age
        gap[name] = float(np.abs(ages - 70).mean())
    assert gap["taught"] < 15 and gap["plain"] > 25, gap

    out = tmp_path / "taught"
    info = read_record(out / "best.safetensors").training["distill"]
    assert info["teacher"] == str(teacher) and info["file"] == teacher.name and len(info["sha256"]) == 64
    assert info["weight"] == 1.0 and info["temperature"] == 1.0
    (cached,) = out.glob("teacher-*.npy")
    assert (np.load(cached).argmax(1) == 70).all()
    stamp = cached.stat().st_mtime_ns
    train(runs["taught"].override({"optim": {"epochs": 7}}), out, resume=True, quiet=True)
    assert cached.stat().st_mtime_ns == stamp  # read back, not scored again
    _opinionated_teacher(teacher, 60, 32)  # the teacher file changes under a run: said, and the new one teaches
    capsys.readouterr()
    train(runs["taught"].override({"optim": {"epochs": 8}}), out, resume=True)
    assert "changed since they were made" in capsys.readouterr().out
    assert len(list(out.glob("teacher-*.npy"))) == 2


def test_a_teacher_of_another_input_size_is_refused(tiny_manifest, tmp_path):
    teacher = _opinionated_teacher(tmp_path / "teacher.safetensors", 70, 112)
    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"distill.teacher": str(teacher)})
    with pytest.raises(ConfigError, match="distill.teacher .* reads 112-px crops, this run 32-px"):
        train(cfg, tmp_path / "run", quiet=True)


def _with_sources(manifest, order=None):
    """Give a synthetic manifest's rows a ``source`` photo name (photo00, photo01, ...), optionally reordered."""
    rows = list(csv.DictReader(open(manifest)))
    for i, r in enumerate(rows):
        r["source"] = f"photo{i:02d}"
    rows = [rows[i] for i in (order or range(len(rows)))]
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def test_a_teacher_of_other_crops_scores_its_own_crops_of_the_same_photos(tmp_path):
    """distill.crops: a 48-px teacher teaches a 32-px student, each row's target being the teacher's reading
    of its own crop of that row's photo (found by source, whatever the order); a photo without a teacher crop
    is refused by name."""
    import numpy as np
    from PIL import Image

    from conftest import synthetic_dataset
    from faceage.data.manifest import read_manifest
    from faceage.nets.model import create_model
    from faceage.runtime.torch_backend import TorchBackend
    from faceage.core.scoring import score
    from faceage.models.weights import ModelRecord
    from faceage.models.write import save_model

    student = _with_sources(synthetic_dataset(tmp_path / "student", n=24, size=32, seed=1))
    own = _with_sources(synthetic_dataset(tmp_path / "own", n=24, size=48, seed=2), order=list(range(23, -1, -1)))
    torch.manual_seed(0)
    net = create_model("ma_sfv2", 0.5).eval()  # untrained: its reading depends on the pixels
    teacher = save_model(net, ModelRecord(model=net.spec, input_size=48), tmp_path / "teacher.safetensors")
    cfg = tiny_config(student, tmp_path / "cache", **{"optim.epochs": 1, "eval.tta": "none",
                                                      "distill.teacher": str(teacher), "distill.crops": {"own": str(own)}})
    train(cfg, tmp_path / "run", quiet=True)
    (cached,) = (tmp_path / "run").glob("teacher-*.npy")
    by_source = {s.source: s.path for s in read_manifest(own).samples}
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "split.csv")) if r["split"] == "train"]
    crops = np.stack([np.asarray(Image.open(by_source[r["source"]]).convert("RGB")) for r in rows])
    expected = score(TorchBackend(teacher), crops, "none").logits
    np.testing.assert_allclose(np.load(cached), expected, atol=1e-3)

    with pytest.raises(ConfigError, match="reads 48-px crops, this run 32-px .* distill.crops"):
        train(tiny_config(student, tmp_path / "cache", **{"distill.teacher": str(teacher)}), tmp_path / "r2", quiet=True)
    lines = open(own).read().splitlines()
    gone = rows[0]["source"]  # a training photo
    open(own, "w").write("\n".join(line for line in lines if not line.endswith(f",{gone}")) + "\n")
    with pytest.raises(ConfigError, match=f"no crop of 1 of the .* training photos .*{gone}"):
        train(cfg, tmp_path / "r3", quiet=True)
