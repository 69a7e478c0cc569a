"""Atomic per-epoch checkpoints of a training run, the previous one kept as a fallback, and its
metrics file (the part of :class:`faceage.train.loop.Trainer` that reads and writes them).

What is loaded is checked before training continues: the keys, every tensor's shape, dtype and
finiteness against the model and optimiser being resumed, the field types and the random states.
A checkpoint that fails falls back to the previous one (``last.prev.pt``) with a one-line warning;
when none passes, one clear :class:`~faceage.errors.WeightsError` names them all. What is saved is
checked the same way first, and an epoch whose loss, metrics or weights are NaN or infinite is never
saved: a good checkpoint is never rotated out by a bad one.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from faceage.errors import ConfigError, FaceageError, WeightsError
from faceage.core.options import number_problem
from faceage.train import distributed as ddp


class CheckpointError(ValueError):
    """What is wrong with one checkpoint (the caller tries the next one)."""


def check_tensors(what: str, got, expected: dict[str, torch.Tensor]) -> None:
    """``got`` is a state dict with exactly ``expected``'s keys, shapes and dtypes, floats all finite."""
    if not isinstance(got, dict):
        raise CheckpointError(f"{what} is {type(got).__name__}, not a state dict")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{what} does not match the network: missing {missing[:3]}, unexpected {extra[:3]}"
                              f"{' ...' if len(missing) > 3 or len(extra) > 3 else ''}")
    for name, want in expected.items():
        _check_tensor(f"{what} {name}", got[name], tuple(want.shape), want.dtype)


def _check_tensor(what: str, t, shape: tuple | None, dtype: torch.dtype | None) -> None:
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{what} is {type(t).__name__}, not a tensor")
    if shape is not None and tuple(t.shape) != shape:
        raise CheckpointError(f"{what} has shape {list(t.shape)}, the network's is {list(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise CheckpointError(f"{what} is {t.dtype}, expected {dtype}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise CheckpointError(f"{what} holds NaN or infinite values")


def _number(what: str, v, integer: bool = False) -> None:
    """A checkpoint's number (infinity allowed: the best MAE before any epoch)."""
    if number_problem(v, integer=integer, finite=False):
        raise CheckpointError(f"{what} is {v!r}, not a {'whole number' if integer else 'number'}")


class Checkpoints:
    """Mixed into the Trainer: ``save_checkpoint``, ``load_checkpoint``, ``read_checkpoint``, ``check_epoch``."""

    #: checkpoints, newest first: the latest epoch's, and the one before it to fall back on
    CHECKPOINTS = ("last.pt", "last.prev.pt")
    CHECKPOINT_KEYS = {"model", "optimizer", "epoch", "best", "generator", "torch_rng", "history"}
    #: False after resuming from last.prev.pt because last.pt was bad: that last.pt is then never rotated
    #: into last.prev.pt (it would replace the good fallback)
    _last_is_good = True

    def save_checkpoint(self) -> None:
        """Rank 0 only. The plain model's state dict: no ``module.``/``_orig_mod.`` prefixes. The state is
        checked before the previous checkpoint is rotated out."""
        if not self.is_main:
            return
        state = {
            "model": ddp.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        try:
            self.check_state(state)
        except CheckpointError as exc:
            raise FaceageError(f"epoch {self.epoch}: not saved, the state to checkpoint is bad ({exc}); "
                               f"{self.out / self.CHECKPOINTS[0]} keeps the last good one", code="diverged") from None
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        last = self.out / self.CHECKPOINTS[0]
        if last.is_file() and self._last_is_good:  # keep the previous epoch's checkpoint to fall back on
            os.replace(last, self.out / self.CHECKPOINTS[1])
        os.replace(tmp, last)
        self._last_is_good = True

    def check_state(self, state: dict) -> None:
        """Raise :class:`CheckpointError` unless ``state`` fits this trainer's network, optimiser and random
        generators; a different ``optim.backbone_lr_scale`` is a :class:`ConfigError` (no fallback helps)."""
        if not isinstance(state, dict) or not self.CHECKPOINT_KEYS <= set(state):
            missing = sorted(self.CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else "all"
            raise CheckpointError(f"not a faceage training checkpoint (missing {missing})")
        _number("epoch", state["epoch"], integer=True)
        if state["epoch"] < 0:
            raise CheckpointError(f"epoch is {state['epoch']}")
        _number("best", state["best"])
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise CheckpointError(f"history is {type(history).__name__}, not a list of metric rows")
        if len(history) != state["epoch"]:
            raise CheckpointError(f"history has {len(history)} rows for {state['epoch']} epochs")
        _check_tensor("generator state", state["generator"], tuple(self.gen.get_state().shape), torch.uint8)
        _check_tensor("torch RNG state", state["torch_rng"], tuple(torch.get_rng_state().shape), torch.uint8)
        check_tensors("model", state["model"], ddp.unwrap(self.model).state_dict())
        self._check_optimizer(state["optimizer"], state["epoch"])
        if "scaler" in state and not isinstance(state["scaler"], dict):
            raise CheckpointError("scaler state is not a dict")

    def _check_optimizer(self, saved, epoch: int) -> None:
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) or not isinstance(
                saved.get("param_groups"), list) or not all(isinstance(g, dict) for g in saved["param_groups"]):
            raise CheckpointError("optimizer state is empty or malformed (no 'state' and 'param_groups')")
        lr_scales = [g.get("lr_scale", 1.0) for g in saved["param_groups"]]
        wanted = [g.get("lr_scale", 1.0) for g in self.optimizer.param_groups]
        if lr_scales != wanted:
            raise ConfigError(f"{self.out / 'last.pt'} was trained with optim.backbone_lr_scale={lr_scales[0]:g}, "
                              f"the config says {wanted[0]:g}; resume with the same value or start a new run folder")
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        ids = [i for g in saved["param_groups"] for i in (g.get("params") or [])]
        if [len(g.get("params") or []) for g in saved["param_groups"]] != [
                len(g["params"]) for g in self.optimizer.param_groups] or sorted(ids) != list(range(len(params))):
            raise CheckpointError("optimizer state does not match the network's parameters")
        if epoch > 0 and not saved["state"]:
            raise CheckpointError(f"optimizer state is empty after {epoch} epochs")
        for i, entry in saved["state"].items():
            if i not in range(len(params)) or not isinstance(entry, dict):
                raise CheckpointError(f"optimizer state has a bad entry {i!r}")
            for key, t in entry.items():
                shape = None if key == "step" else tuple(params[i].shape)
                _check_tensor(f"optimizer {key} of parameter {i}", t, shape, None)

    def load_checkpoint(self, restart: bool = False) -> bool:
        """Rank 0 reads and checks ``last.pt`` (or, with a warning, ``last.prev.pt`` when ``last.pt`` is
        damaged or does not fit) and sends it to the other ranks (no shared file system needed). A run
        folder with no usable checkpoint is refused unless ``restart`` (then it trains from scratch)."""
        state, used = None, None
        if self.is_main:
            self.resumable(self.out, restart)
            try:
                state, used = self.read_checkpoint(self.out, self.check_state, with_path=True)
            except WeightsError:
                if not restart:
                    raise
                warnings.warn(f"{self.out}: no usable checkpoint; training it again from scratch (--restart)",
                              stacklevel=2)
        state, used = ddp.broadcast_object((state, used), self.dist)
        if state is None:
            return False
        try:
            ddp.unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if "scaler" in state and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
        except Exception as exc:  # noqa: BLE001 - checked above; anything left is still the file's fault
            raise WeightsError(f"cannot resume from {used}: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
                               "train into a new folder") from exc
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        self._last_is_good = Path(used).name == self.CHECKPOINTS[0]
        self._write_metrics()  # drop rows of an epoch that ended after its checkpoint
        self.log(f"resumed {self.out} after epoch {self.epoch}")
        return True

    @classmethod
    def resumable(cls, out: Path, restart: bool = False) -> bool:
        """True when ``out`` holds a checkpoint; a folder without one is refused (WeightsError) unless
        ``restart`` (False: train it from scratch). Cheap: the CLI asks before loading any data."""
        out = Path(out)
        if any((out / name).is_file() for name in cls.CHECKPOINTS):
            return True
        if restart:
            return False
        what = "no such folder" if not out.is_dir() else f"it has no checkpoint ({', '.join(cls.CHECKPOINTS)})"
        raise WeightsError(f"cannot resume {out}: {what}; give --restart to train it again from scratch (its "
                           "metrics.csv and best.safetensors are replaced), or train into a new folder")

    @classmethod
    def read_checkpoint(cls, out: Path, check: Callable[[dict], None] | None = None, with_path: bool = False):
        """The newest readable checkpoint in ``out`` that passes ``check`` (None when there is none; with
        ``with_path``: (state, path)). A damaged or unfitting ``last.pt`` falls back to ``last.prev.pt`` with
        a one-line warning; when neither passes, one WeightsError names them."""
        problems = []
        for name in cls.CHECKPOINTS:
            path = out / name
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or not cls.CHECKPOINT_KEYS <= set(state):
                    raise CheckpointError("not a faceage training checkpoint")
                if check is not None:
                    check(state)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError... for damaged files
                why = str(exc).splitlines()[0] if str(exc) else "empty or truncated"
                kind = "" if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: "
                problems.append(f"{path}: {kind}{why}")
                continue
            if problems:
                warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {path} instead", stacklevel=2)
            return (state, str(path)) if with_path else state
        if problems:
            raise WeightsError(f"cannot resume: {'; '.join(problems)}; give --restart to train the run again from "
                               "scratch, or train into a new folder")
        return (None, None) if with_path else None

    def check_epoch(self, row: dict) -> None:
        """Stop (nothing of this epoch saved) when its loss, metrics or weights are NaN or infinite: the
        run diverged, or resumed weights were damaged in a way no check could see."""
        bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
        if not bad and all(bool(torch.isfinite(p).all()) for p in ddp.unwrap(self.model).parameters()):
            return
        what = f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'}" if bad else "the weights are"
        raise FaceageError(f"epoch {self.epoch + 1}: {what} NaN or infinite, the training diverged; nothing of "
                           f"this epoch was saved ({self.out / self.CHECKPOINTS[0]} still holds epoch {self.epoch}); "
                           "lower optim.lr or check the data, then --resume", code="diverged")

    def _write_metrics(self) -> None:
        if not self.is_main:
            return
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, self.metric_fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.history)
