"""The training loop: cached batches -> augmentation -> network + joint loss -> checkpoints.

Every epoch ends with an atomic checkpoint (model, optimiser, schedule, random
state), so ``--resume`` continues a killed run exactly where its last epoch
ended and reaches the same weights as an uninterrupted run.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from faceage.data.augment import augment, normalize
from faceage.data.manifest import write_manifest
from faceage.metrics import age_metrics, plot_cs_curves, plot_curves, plot_error_by_age
from faceage.nets.model import AgeNet, ModelSpec, count_params, estimate_age
from faceage.train.config import dump_config
from faceage.train.data import cached_splits, load_samples, with_splits
from faceage.train.loss import age_loss
from faceage.weights import ModelRecord, save_model

METRIC_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_mae_dex", "val_mae_reg", "val_mae_mean", "seconds")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(epoch: int, optim: dict) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    warm = optim["warmup_epochs"]
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    if optim["schedule"] == "cosine":
        t = (epoch - warm) / max(1, optim["epochs"] - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    return optim["gamma"] ** (epoch // optim["step_every"])


@torch.no_grad()
def predict_arrays(
    model: torch.nn.Module, images: np.ndarray, record: ModelRecord, device: torch.device,
    batch_size: int = 256, flip_tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, regression) for an (n, S, S, 3) uint8 array, in batches."""
    model.eval()
    logits_out, reg_out = [], []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
        x = normalize(x, record.mean, record.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, reg = model(x)
            if flip_tta:
                l2, r2 = model(x.flip(-1))
                logits, reg = (logits + l2) / 2, (reg + r2) / 2
        logits_out.append(logits.float().cpu())
        reg_out.append(reg.float().cpu())
    return torch.cat(logits_out).numpy(), torch.cat(reg_out).numpy()


@dataclass
class Trainer:
    cfg: dict
    out: Path
    quiet: bool = False
    stop_at_step: int | None = None  # raise KeyboardInterrupt there (tests of resume)

    def log(self, msg: str) -> None:
        if not self.quiet:
            tqdm.write(msg)

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, run = self.cfg, self.cfg["run"]
        self.out.mkdir(parents=True, exist_ok=True)
        if run["threads"]:
            torch.set_num_threads(int(run["threads"]))
        torch.manual_seed(run["seed"])
        self.device = pick_device(run["device"])
        samples, problems, crop = load_samples(cfg["data"])
        for p in problems[:20]:
            self.log(f"skipped row: {p}")
        if len(problems) > 20:
            self.log(f"... and {len(problems) - 20} more skipped rows")
        samples = with_splits(samples, cfg["data"])
        write_manifest(samples, self.out / "split.csv")
        size = int(cfg["data"]["input_size"])
        self.data = cached_splits(samples, size, cfg["data"]["cache_dir"], quiet=self.quiet)
        self.model = AgeNet(ModelSpec(**cfg["model"])).to(self.device)
        if run["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        opt = cfg["optim"]
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"]
        )
        self.record = ModelRecord(
            model=ModelSpec(**cfg["model"]).to_dict(),
            input_size=size,
            crop=crop,
            estimate=cfg["eval"]["estimate"],
            training={
                "data": str(cfg["data"]["manifest"] or cfg["data"]["path"]),
                "n_train": len(self.data["train"].ages),
                "n_val": len(self.data["val"].ages),
                "params": count_params(self.model),
            },
        )
        self.step_model = torch.compile(self.model) if run["compile"] else self.model
        self.gen = torch.Generator().manual_seed(run["seed"])
        self.epoch = 0
        self.best = float("inf")
        self.history: list[dict] = []
        dump_config(cfg, self.out / "config.yaml")

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / "last.pt")

    def load_checkpoint(self) -> bool:
        path = self.out / "last.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self._write_metrics()  # drop rows of an epoch that ended after its checkpoint
        self.log(f"resumed {self.out} after epoch {self.epoch}")
        return True

    def _write_metrics(self) -> None:
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.history)

    # -- one epoch --------------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float]:
        cfg, dev = self.cfg, self.device
        train = self.data["train"]
        bs = int(cfg["optim"]["batch_size"])
        lr = cfg["optim"]["lr"] * lr_factor(self.epoch, cfg["optim"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        perm = torch.randperm(len(train.ages), generator=self.gen)
        steps = len(perm) // bs  # drop the ragged last batch: BatchNorm dislikes tiny batches
        ages = torch.from_numpy(train.ages)
        use_amp = dev.type == "cuda" and cfg["run"]["amp"]
        self.step_model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {self.epoch + 1}/{cfg['optim']['epochs']}", unit="batch",
                   disable=self.quiet, dynamic_ncols=True)
        start = time.perf_counter()
        for step in bar:
            if self.stop_at_step is not None and self.epoch * steps + step >= self.stop_at_step:
                raise KeyboardInterrupt("stopped on request")
            idx = perm[step * bs : (step + 1) * bs]
            x = torch.from_numpy(train.images[idx.numpy()]).permute(0, 3, 1, 2).to(dev, non_blocking=True)
            y = ages[idx].to(dev, non_blocking=True)
            x = augment(x, cfg["augment"], self.record.mean, self.record.std, self.gen)
            if cfg["run"]["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits, reg = self.step_model(x)
            loss = age_loss(logits.float(), reg.float(), y, cfg["loss"]["reg_weight"], cfg["loss"]["label_sigma"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        bar.close()
        return total / max(seen, 1), lr

    def validate(self) -> dict:
        val = self.data["val"]
        logits, reg = predict_arrays(self.model, val.images, self.record, self.device,
                                     self.cfg["eval"]["batch_size"], self.cfg["eval"]["flip_tta"])
        lt, rt, yt = torch.from_numpy(logits), torch.from_numpy(reg), torch.from_numpy(val.ages)
        loss = age_loss(lt, rt, yt, self.cfg["loss"]["reg_weight"], self.cfg["loss"]["label_sigma"]).item()
        maes = {how: float((estimate_age(lt, rt, how) - yt).abs().mean()) for how in ("dex", "reg", "mean")}
        return {"val_loss": loss, **{f"val_mae_{k}": v for k, v in maes.items()}}

    # -- the whole run ----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        self.setup()
        if resume:
            self.load_checkpoint()
        epochs = int(self.cfg["optim"]["epochs"])
        key = f"val_mae_{self.cfg['eval']['estimate']}"
        n = len(self.data["train"].ages)
        self.log(f"training {self.record.model} on {n} images, validating on {len(self.data['val'].ages)}, "
                 f"device {self.device}, {self.record.training['params']:,} parameters -> {self.out}")
        while self.epoch < epochs:
            t0 = time.perf_counter()
            train_loss, lr = self.train_epoch()
            row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, **self.validate()}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            self.epoch += 1
            self.history.append(row)
            self.record.training.update({"epochs": self.epoch, "val_mae": row[key]})
            if row[key] < self.best:
                self.best = row[key]
                self.record.training["best_epoch"] = self.epoch
                save_model(self.model, self.record, self.out / "best.safetensors", half=self.cfg["run"]["save_half"])
            save_model(self.model, self.record, self.out / "last.safetensors", half=self.cfg["run"]["save_half"])
            self.save_checkpoint()
            self._write_metrics()
            plot_curves(self.history, self.out / "curves.png")
            self.log(f"epoch {self.epoch}: train loss {train_loss:.3f}  val loss {row['val_loss']:.3f}  "
                     f"val MAE dex {row['val_mae_dex']:.2f} reg {row['val_mae_reg']:.2f}  ({row['seconds']:.0f}s)")
        return self.finish()

    def finish(self) -> dict:
        """Score the best weights on the validation split; write the summary and plots."""
        from faceage.weights import load_model

        model, record = load_model(self.out / "best.safetensors", device=str(self.device))
        val = self.data["val"]
        logits, reg = predict_arrays(model, val.images, record, self.device, flip_tta=self.cfg["eval"]["flip_tta"])
        pred = estimate_age(torch.from_numpy(logits), torch.from_numpy(reg), record.estimate).numpy()
        report = age_metrics(pred, val.ages)
        report["mae_reg"] = round(float(np.abs(reg - val.ages).mean()), 4)
        plot_cs_curves({record.model["arch"]: report["cs"]}, self.out / "cs_curve.png", "Validation CS")
        plot_error_by_age(pred, val.ages, self.out / "error_by_age.png")
        summary = {"run": str(self.out), "epochs": self.epoch, "best_val_mae": self.best,
                   "val": report, "record": json.loads(record.to_json())}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        self.log(f"done: best validation MAE {self.best:.3f} (epoch {record.training.get('best_epoch')}), "
                 f"CS(5) {report['cs']['5']:.3f}; weights {self.out / 'best.safetensors'}")
        return summary


def train(cfg: dict, out: str | Path, resume: bool = False, quiet: bool = False,
          stop_at_step: int | None = None) -> dict:
    return Trainer(cfg, Path(out), quiet=quiet, stop_at_step=stop_at_step).fit(resume=resume)
