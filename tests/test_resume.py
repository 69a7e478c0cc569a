"""faceage train --resume checks what it loads: a checkpoint with wrong shapes, an empty optimiser state,
bad field types, a bad random state or NaN weights falls back to last.prev.pt with a one-line warning; a
broken config.yaml or a folder without a checkpoint is a clear error (--restart trains it from scratch);
an epoch that goes NaN is never saved, and a bad last.pt is never rotated over the good last.prev.pt."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from conftest import tiny_config
from faceage.cli import main
from faceage.errors import FaceageError, WeightsError
from faceage.train.loop import Trainer, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch run (last.pt: epoch 2, last.prev.pt: epoch 1) and its config."""
    from conftest import synthetic_dataset

    root = tmp_path_factory.mktemp("resume")
    cfg = tiny_config(synthetic_dataset(root / "data"), root / "cache", **{"optim.epochs": 2})
    train(cfg, root / "run", quiet=True)
    return root / "run", cfg


@pytest.fixture
def run(trained, tmp_path):
    src, cfg = trained
    shutil.copytree(src, tmp_path / "run")
    return tmp_path / "run", cfg


def _damage(path, how: str) -> None:
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 4)
    if how == "shape":
        state["model"][name] = state["model"][name][:1]
    elif how == "nan":
        state["model"][name] = state["model"][name].contiguous()
        state["model"][name].view(-1)[7] = float("nan")  # a flipped exponent bit
    elif how == "optimizer":
        state["optimizer"] = {}
    elif how == "empty_optimizer_state":
        state["optimizer"]["state"] = {}
    elif how == "types":
        state["epoch"] = "2"
    elif how == "rng":
        state["torch_rng"] = torch.zeros(10, dtype=torch.uint8)
    elif how == "generator":
        state["generator"] = [1, 2, 3]
    elif how == "history":
        state["history"] = None
    torch.save(state, path)


@pytest.mark.parametrize("how, why", [
    ("shape", "has shape"), ("nan", "NaN or infinite"), ("optimizer", "optimizer state is empty or malformed"),
    ("empty_optimizer_state", "optimizer state is empty after 2 epochs"), ("types", "epoch is '2'"),
    ("rng", "torch RNG state has shape"), ("generator", "generator state is list"), ("history", "history is"),
])
def test_a_bad_last_checkpoint_falls_back_to_the_previous_one(run, how, why):
    out, cfg = run
    _damage(out / "last.pt", how)
    trainer = Trainer(cfg.override({"optim": {"epochs": 2}}), out, quiet=True)
    trainer.setup()
    with pytest.warns(UserWarning, match=f"last.pt: .*{why}.*; resuming from the previous checkpoint .*last.prev.pt"):
        assert trainer.load_checkpoint()
    assert trainer.epoch == 1 and len(trainer.history) == 1


def test_both_bad_is_one_clear_error_and_restart_trains_again(run):
    out, cfg = run
    _damage(out / "last.pt", "nan")
    _damage(out / "last.prev.pt", "shape")
    with pytest.raises(WeightsError, match=r"cannot resume: .*last.pt: model .* NaN .*last.prev.pt: model .* shape "
                                           r".*give --restart"):
        train(cfg, out, resume=True, quiet=True)
    with pytest.warns(UserWarning, match="no usable checkpoint; training it again from scratch"):
        summary = train(cfg, out, resume=True, quiet=True, restart=True)
    assert summary["epochs"] == 2


def test_resuming_from_the_fallback_never_rotates_the_bad_last_over_it(run):
    out, cfg = run
    _damage(out / "last.pt", "nan")
    with pytest.warns(UserWarning, match="resuming from the previous checkpoint"):
        train(cfg, out, resume=True, quiet=True)  # epoch 2 again, from epoch 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    prev = torch.load(out / "last.prev.pt", weights_only=True)
    assert prev["epoch"] == 1  # the good fallback, not the damaged last.pt
    assert all(torch.isfinite(v).all() for v in prev["model"].values() if v.is_floating_point())


def test_a_nan_epoch_is_never_saved(run):
    """A last.pt whose weights pass every check (finite) but blow up in training: the epoch stops the run,
    last.pt and last.prev.pt stay as they were."""
    out, cfg = run
    state = torch.load(out / "last.pt", weights_only=True)
    for k, v in state["model"].items():
        if v.is_floating_point() and k.endswith("weight"):
            v.mul_(1e30)
    torch.save(state, out / "last.pt")
    before = {n: (out / n).read_bytes() for n in ("last.pt", "last.prev.pt", "best.safetensors", "metrics.csv")}
    with pytest.raises(FaceageError, match=r"epoch 3: .* NaN or infinite, the training diverged; nothing of this "
                                           r"epoch was saved \(.*last.pt still holds epoch 2\)") as err:
        train(cfg.override({"optim": {"epochs": 3}}), out, resume=True, quiet=True)
    assert err.value.code == "diverged"
    assert {n: (out / n).read_bytes() for n in before} == before


def test_the_cli_refuses_a_folder_without_a_checkpoint_and_a_broken_config(run, tmp_path, capsys):
    out, cfg = run
    for name in ("last.pt", "last.prev.pt"):
        (out / name).unlink()
    metrics = (out / "metrics.csv").read_text()
    assert main(["train", "--resume", str(out), "--quiet"]) == 4
    assert "has no checkpoint (last.pt, last.prev.pt); give --restart" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == metrics  # nothing overwritten
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 4
    assert "no such folder" in capsys.readouterr().err
    assert main(["train", "--restart"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder with no checkpoint at all: --restart trains it without a word
        assert main(["train", "--resume", str(out), "--restart", "--quiet"]) == 0
    assert (out / "last.pt").is_file()
    (out / "config.yaml").write_text("optim: {epochs: 3\n  lr: [")
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    assert "config.yaml: not valid YAML" in capsys.readouterr().err
    (out / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    assert "config.yaml: not a text file" in capsys.readouterr().err
    (out / "config.yaml").unlink()
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    assert "config.yaml is missing" in capsys.readouterr().err
