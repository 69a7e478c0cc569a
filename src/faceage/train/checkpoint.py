"""Atomic per-epoch checkpoints of a training run, the previous one kept as a fallback, and its
metrics file (the part of :class:`faceage.train.loop.Trainer` that reads and writes them)."""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import torch

from faceage.errors import ConfigError, WeightsError
from faceage.train import distributed as ddp


class Checkpoints:
    """Mixed into the Trainer: ``save_checkpoint``, ``load_checkpoint``, ``read_checkpoint``."""

    #: checkpoints, newest first: the latest epoch's, and the one before it to fall back on
    CHECKPOINTS = ("last.pt", "last.prev.pt")
    CHECKPOINT_KEYS = {"model", "optimizer", "epoch", "best", "generator", "torch_rng", "history"}

    def save_checkpoint(self) -> None:
        """Rank 0 only. The plain model's state dict: no ``module.``/``_orig_mod.`` prefixes."""
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
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        last = self.out / self.CHECKPOINTS[0]
        if last.is_file():  # keep the previous epoch's checkpoint to fall back on
            os.replace(last, self.out / self.CHECKPOINTS[1])
        os.replace(tmp, last)

    def load_checkpoint(self) -> bool:
        """Rank 0 reads ``last.pt`` (or, with a warning, ``last.prev.pt`` when ``last.pt`` is damaged)
        and sends it to the other ranks (no shared file system needed)."""
        state = None
        if self.is_main:
            state = self.read_checkpoint(self.out)
        state = ddp.broadcast_object(state, self.dist)
        if state is None:
            return False
        saved = [g.get("lr_scale", 1.0) for g in state["optimizer"]["param_groups"]]
        wanted = [g.get("lr_scale", 1.0) for g in self.optimizer.param_groups]
        if saved != wanted:
            raise ConfigError(f"{self.out / 'last.pt'} was trained with optim.backbone_lr_scale={saved[0]:g}, the "
                              f"config says {wanted[0]:g}; resume with the same value or start a new run folder")
        ddp.unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self._write_metrics()  # drop rows of an epoch that ended after its checkpoint
        self.log(f"resumed {self.out} after epoch {self.epoch}")
        return True

    @classmethod
    def read_checkpoint(cls, out: Path) -> dict | None:
        """The newest readable checkpoint in ``out`` (None when there is none). A damaged ``last.pt``
        falls back to ``last.prev.pt`` with a warning; when neither reads, one WeightsError names them."""
        problems = []
        for name in cls.CHECKPOINTS:
            path = out / name
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or not cls.CHECKPOINT_KEYS <= set(state):
                    raise ValueError("not a faceage training checkpoint")
            except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError... for damaged files
                why = str(exc).splitlines()[0] if str(exc) else "empty or truncated"
                problems.append(f"{path}: {type(exc).__name__}: {why}")
                continue
            if problems:
                warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {path} instead", stacklevel=2)
            return state
        if problems:
            raise WeightsError(f"cannot resume: {'; '.join(problems)}; delete the run folder's checkpoints to start "
                               "over, or train into a new folder")
        return None

    def _write_metrics(self) -> None:
        if not self.is_main:
            return
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, self.metric_fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.history)
