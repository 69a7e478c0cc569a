"""The training loop: cached batches -> augmentation -> network + joint loss -> checkpoints.

Every epoch ends with an atomic checkpoint (model, optimiser, schedule, random
state), so ``--resume`` continues a killed run exactly where its last epoch
ended and reaches the same weights as an uninterrupted run.

Launched by ``torchrun`` the same loop runs DistributedDataParallel (see
``faceage.train.distributed`` and docs/training.md): every rank draws the same
seeded permutation and takes its contiguous share of each global batch
(``optim.batch_size`` is the global batch), so the data order is a single
process's; only rank 0 writes files. Each batch is augmented with its own
generator seeded by (seed, epoch, step, rank), so batches can be prepared ahead by
background threads (``run.prefetch``) and resuming needs no augmentation state.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from faceage.data.manifest import write_manifest
from faceage.data.split import file_digest
from faceage.errors import ConfigError, ManifestError
from faceage.metrics import age_metrics, balanced_mae, plot_cs_curves, plot_curves, plot_error_by_age
from faceage.nets.model import AgeNet, count_params, input_normalization
from faceage.train import distributed as ddp
from faceage.train.checkpoint import Checkpoints
from faceage.train.loader import Batches
from faceage.train.config import Config, dump_config
from faceage.data.sets import (
    cached_splits, crop_differences, load_samples, prior_correction,
)
from faceage.train.loss import age_loss, distilled_loss
from faceage.train.setup import amp_dtype, load_init_weights, lr_factor, model_spec, param_groups
from faceage.core.ages import ESTIMATES
from faceage.models.weights import ModelRecord, Scoring
from faceage.models.write import save_model

PRIOR_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)  # how much of the data's age prior is put back (chosen on val)
METRIC_FIELDS = ("epoch", "lr", "train_loss", "val_loss", *(f"val_mae_{how}" for how in ESTIMATES), "seconds")


@dataclass
class Trainer(Checkpoints, Batches):
    cfg: Config
    out: Path
    quiet: bool = False
    stop_at_step: int | None = None  # raise KeyboardInterrupt there (tests of resume)
    data: dict | None = None  # {"train": SplitData, "val": SplitData} to use instead of cfg.data (benchmarks)

    def log(self, msg: str) -> None:
        if not self.quiet:
            tqdm.write(msg)

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, run = self.cfg, self.cfg.run
        if run.threads:
            torch.set_num_threads(int(run.threads))
        self.dist = ddp.setup(run.device)
        self.is_main = self.dist.is_main
        if not self.is_main:
            self.quiet = True
        # every rank writes (if at all) where rank 0 does, even if its default name differs
        self.out = Path(ddp.broadcast_object(str(self.out), self.dist))
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(run.seed)
        self.device = self.dist.device
        size = int(cfg.data.input_size)
        crop = None
        if self.data is None:
            samples, problems, crop = load_samples(cfg.data)
            for p in problems[:20]:
                self.log(f"skipped row: {p}")
            if len(problems) > 20:
                self.log(f"... and {len(problems) - 20} more skipped rows")
            if self.is_main:
                write_manifest(samples, self.out / "split.csv")
            with ddp.rank0_first(self.dist):  # one process decodes the cache, the others reuse it
                self.data = cached_splits(samples, size, cfg.data.cache_dir, quiet=self.quiet)
        self.global_batch = int(cfg.optim.batch_size)
        if self.global_batch % self.dist.world_size:
            raise ConfigError(f"optim.batch_size {self.global_batch} (the global batch) must be divisible by "
                              f"the number of processes, {self.dist.world_size}")
        n_train = len(self.data["train"].ages)
        if n_train < self.global_batch:  # an epoch drops the ragged last batch: it would train nothing
            raise ManifestError(f"{n_train} training images, fewer than one batch (optim.batch_size "
                                f"{self.global_batch}): nothing would be trained; add data or set a smaller "
                                f"optim.batch_size (e.g. optim.batch_size={max(2, n_train // 2)})")
        self._gpu_cache = bool(run.gpu_cache)
        spec = model_spec(cfg)
        self.model = AgeNet(spec)
        init = cfg.model.init
        if init:
            init_crop, init_file = load_init_weights(self.model, spec, size, init)
            for diff in crop_differences(init_crop, crop) if crop is not None else []:
                self.log(f"warning: model.init {init} was trained on other crops than this data's: {diff}")
        if self.dist.enabled and run.sync_bn:
            self.model = ddp.convert_sync_batchnorm(self.model, self.device)
        self.model = self.model.to(self.device)
        if run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = amp_dtype(self.device, run.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        opt = cfg.optim
        self.optimizer = torch.optim.Adam(
            param_groups(self.model, float(opt.backbone_lr_scale)), lr=opt.lr, betas=tuple(opt.betas),
            weight_decay=opt.weight_decay,
        )
        self.datasets = sorted(set(self.data["val"].datasets.tolist()))
        # per-data-set validation MAE (the record's estimate) next to the pooled figures
        self.metric_fields = METRIC_FIELDS[:-1] + tuple(
            f"val_mae_{d}" for d in self.datasets if len(self.datasets) > 1) + METRIC_FIELDS[-1:]
        norm = input_normalization(spec)
        self.record = ModelRecord(
            model=spec,
            input_size=size,
            **({"mean": norm[0], "std": norm[1]} if norm else {}),
            crop=crop,
            estimate=cfg.eval.estimate,
            scoring=Scoring(tta=cfg.eval.tta),  # the views its interval and val numbers are measured with
            training={
                "data": str(cfg.data.datasets or cfg.data.manifest or cfg.data.path),
                "n_train": len(self.data["train"].ages),
                "n_val": len(self.data["val"].ages),
                "params": count_params(self.model),
            },
        )
        if init:
            self.record.training["init"] = str(init)  # as given (a name, file or run folder), and the file it was
            # the file by name and content, not by this machine's path (records travel inside shipped models)
            self.record.training["init_file"] = Path(init_file).name
            self.record.training["init_sha256"] = file_digest(init_file, "sha256")
        if self.dist.enabled:
            self.record.training["world_size"] = self.dist.world_size
        self.teacher = None  # (N, classes) soft-target logits per training row, with distill.teacher
        if cfg.distill.teacher:
            from faceage.train.distill import teacher_logits

            with ddp.rank0_first(self.dist):  # rank 0 scores and keeps them; the others read its file
                logits, info = teacher_logits(cfg.distill.teacher, self.data["train"], size, crop, self.out,
                                              str(self.device), self.log, quiet=self.quiet,
                                              crops=cfg.distill.crops, cache_dir=cfg.data.cache_dir)
            self.teacher = torch.from_numpy(logits)
            self.record.training["distill"] = {**cfg.distill.to_dict(), **info}
        self.step_model = self.model  # wrapped for DDP / torch.compile by build_step_model()
        self.gen = torch.Generator().manual_seed(run.seed)  # the sampler: same on every rank
        self.epoch = 0
        self.best = float("inf")
        self.history: list[dict] = []
        self._train_images = None
        if self.is_main:
            dump_config(cfg, self.out / "config.yaml")

    def build_step_model(self) -> None:
        """Wrap the model for training: DistributedDataParallel under torchrun, then torch.compile."""
        model = self.model
        if self.dist.enabled:
            # DDP broadcasts rank 0's weights and buffers, so every rank starts identical
            ids = [self.device.index] if self.device.type == "cuda" else None
            # head-only epochs freeze the backbone after the wrap: DDP must expect parameters without gradients
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=self.cfg.optim.head_only_epochs > 0)
        mode = self.cfg.run.compile
        self.step_model = torch.compile(model, mode=None if mode is True else mode) if mode else model

    # -- one epoch --------------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float]:
        cfg, dev = self.cfg, self.device
        bs = self.global_batch
        lr = cfg.optim.lr * lr_factor(self.epoch, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        head_only = self.epoch < cfg.optim.head_only_epochs  # a fresh head settles before the backbone moves
        for name, p in self.model.named_parameters():
            p.requires_grad_(not head_only or name.startswith("head."))
        perm = self.epoch_order()
        steps = len(perm) // bs  # drop the ragged last batch: BatchNorm dislikes tiny batches
        dtype = self.amp_dtype
        self.step_model.train()
        if head_only:  # BatchNorm statistics are part of the frozen backbone too
            self.model.backbone.eval()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        seen = 0
        bar = tqdm(total=steps, desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}", unit="batch",
                   disable=self.quiet, dynamic_ncols=True)
        start = time.perf_counter()
        distill = cfg.distill
        for step, x, y, soft in self._batches(perm, steps):
            if self.stop_at_step is not None and self.epoch * steps + step >= self.stop_at_step:
                raise KeyboardInterrupt("stopped on request")
            with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits, reg = self.step_model(x)
            if soft is None:
                loss = age_loss(logits.float(), reg.float(), y, **cfg.loss.to_dict())
            else:
                loss = distilled_loss(logits.float(), reg.float(), y, soft, distill.weight, distill.temperature,
                                      **cfg.loss.to_dict())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach().double() * len(y)
            seen += len(y)
            bar.update()
            if not self.quiet and (step % 20 == 0 or step == steps - 1):  # .item() waits for the GPU
                bar.set_postfix(loss=f"{total.item() / seen:.3f}",
                                img_s=f"{seen * self.dist.world_size / (time.perf_counter() - start):.0f}")
        bar.close()
        total_all, seen_all = ddp.all_reduce_sum([total.item(), float(seen)], self.dist)
        return total_all / max(seen_all, 1), lr

    def score_val(self, model: torch.nn.Module, record: ModelRecord, shared: bool = True):
        """The validation split scored by :func:`faceage.core.scoring.score` (the path predict uses): with
        ``shared``, each rank its share, gathered (every rank must call it); else all of it, here."""
        from faceage.runtime.torch_backend import TorchBackend
        from faceage.core.scoring import Scores, score

        val = self.data["val"]
        n = len(val.ages)
        if not shared:
            return score(TorchBackend.from_model(model, record, self.device), val.images, self.cfg.eval.tta,
                         batch_size=self.cfg.eval.batch_size), val.ages
        lo, hi = ddp.shard_range(n, self.dist)
        backend = TorchBackend.from_model(model, record, self.device)
        part = score(backend, val.images[lo:hi], self.cfg.eval.tta, batch_size=self.cfg.eval.batch_size)
        lt = ddp.gather_rows(torch.from_numpy(part.logits), n, self.dist)
        rt = ddp.gather_rows(torch.from_numpy(part.reg), n, self.dist)
        return Scores(lt.numpy(), rt.numpy(), record.estimate, record.interval_temperature), val.ages

    def validate(self) -> dict:
        """Validation loss and MAE (pooled, per estimate, and per data set)."""
        scores, ages = self.score_val(ddp.unwrap(self.model), self.record)
        loss = age_loss(torch.from_numpy(scores.logits), torch.from_numpy(scores.reg), torch.from_numpy(ages),
                        **self.cfg.loss.to_dict()).item()
        row = {"val_loss": loss, **{f"val_mae_{how}": float(np.abs(scores.ages(how) - ages).mean())
                                    for how in ESTIMATES}}
        if len(self.datasets) > 1:
            err, names = np.abs(scores.age - ages), self.data["val"].datasets
            row.update({f"val_mae_{d}": float(err[names == d].mean()) for d in self.datasets})
        return row

    # -- the whole run ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, restart: bool = False) -> dict:
        try:
            self.setup()
            if resume:
                self.load_checkpoint(restart)
            self.build_step_model()
            return self._fit()
        finally:
            if hasattr(self, "dist"):
                ddp.cleanup(self.dist)

    def _fit(self) -> dict:
        epochs = int(self.cfg.optim.epochs)
        key = f"val_mae_{self.cfg.eval.estimate}"
        n = len(self.data["train"].ages)
        where = f"device {self.device}"
        if self.dist.enabled:
            where = f"{self.dist.world_size} processes ({self.dist.backend}, {self.device.type})"
        self.log(f"training {self.record.model.to_dict()} on {n} images, validating on {len(self.data['val'].ages)}, "
                 f"{where}, {self.record.training['params']:,} parameters -> {self.out}")
        half = self.cfg.run.save_half
        while self.epoch < epochs:
            t0 = time.perf_counter()
            train_loss, lr = self.train_epoch()
            row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, **self.validate()}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            self.check_epoch(row)  # a NaN epoch stops the run before anything of it is saved
            self.epoch += 1
            self.history.append(row)
            self.record.training.update({"epochs": self.epoch, "val_mae": row[key]})
            if row[key] < self.best:  # the same decision on every rank: metrics are over the gathered split
                self.best = row[key]
                self.record.training["best_epoch"] = self.epoch
                if self.is_main:
                    save_model(self.model, self.record, self.out / "best.safetensors", half=half)
            if self.is_main:
                save_model(self.model, self.record, self.out / "last.safetensors", half=half)
                self.save_checkpoint()
                self._write_metrics()
                plot_curves(self.history, self.out / "curves.png")
            self.log(f"epoch {self.epoch}: train loss {train_loss:.3f}  val loss {row['val_loss']:.3f}  "
                     f"val MAE dex {row['val_mae_dex']:.2f} reg {row['val_mae_reg']:.2f}  ({row['seconds']:.0f}s)")
        summary = self.finish() if self.is_main else None
        return ddp.broadcast_object(summary, self.dist)

    def finish(self) -> dict:
        """Score the best weights on the validation split, put back the data's age prior after weighted
        sampling and calibrate the age interval there (both stored in the record), and write the
        summary and plots (rank 0)."""
        from dataclasses import replace

        from faceage.core.scoring import calibrate_interval, interval_coverage
        from faceage.models.weights import load_model

        model, record = load_model(self.out / "best.safetensors", device=str(self.device))
        record.logit_bias, record.interval_temperature = None, 1.0  # measured afresh (also on a re-run)
        scores, ages = self.score_val(model, record, shared=False)  # rank 0 alone: no collectives
        weights = self.draw_weights()
        if weights is not None:
            delta = prior_correction(self.data["train"].ages, weights.numpy())
            trials = {t: replace(scores, logits=scores.logits + t * delta) for t in PRIOR_STRENGTHS}
            strength, maes, balanced = choose_prior_strength({t: s.age for t, s in trials.items()}, ages,
                                                             self.cfg.eval.prior_select)
            scores = trials[strength]
            record.logit_bias = tuple(float(v) for v in strength * delta) if strength else None
            record.training["prior_correction"] = {"strength": strength, "chosen_by": self.cfg.eval.prior_select,
                                                   "val_mae_by_strength": maes,
                                                   "val_balanced_mae_by_strength": balanced}
            self.log(f"age prior put back at strength {strength}, the lowest validation {self.cfg.eval.prior_select} "
                     f"(MAE by strength: {maes}; age-balanced MAE: {balanced})")
        record.interval_temperature = calibrate_interval(scores, ages)
        save_model(model, record, self.out / "best.safetensors", half=self.cfg.run.save_half)
        scores.interval_temperature = record.interval_temperature
        pred = scores.age
        report = age_metrics(pred, ages)
        report["mae_reg"] = round(float(np.abs(scores.reg - ages).mean()), 4)
        report["tta"] = self.cfg.eval.tta
        interval = scores.interval()
        report["interval_coverage"] = interval_coverage(interval, ages)
        names = self.data["val"].datasets
        if len(self.datasets) > 1:
            report["by_dataset"] = {d: {**age_metrics(pred[names == d], ages[names == d]),
                                        "interval_coverage": interval_coverage(interval, ages, names == d)}
                                    for d in self.datasets}
        curves = {d: v["cs"] for d, v in report.get("by_dataset", {}).items()} or {record.model.arch: report["cs"]}
        plot_cs_curves(curves, self.out / "cs_curve.png", "Validation CS")
        plot_error_by_age(pred, ages, self.out / "error_by_age.png")
        summary = {"run": str(self.out), "epochs": self.epoch, "best_val_mae": self.best,
                   "val": report, "record": json.loads(record.to_json())}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        per = "".join(f", {d} {v['mae']:.3f}" for d, v in report.get("by_dataset", {}).items())
        self.log(f"done: validation MAE {report['mae']:.3f}{per} (best epoch {record.training.get('best_epoch')}: "
                 f"{self.best:.3f} before the prior correction), "
                 f"CS(5) {report['cs']['5']:.3f}, 80% interval holds {report['interval_coverage']:.3f} "
                 f"(temperature {record.interval_temperature:.3f}); weights {self.out / 'best.safetensors'}")
        return summary


def choose_prior_strength(pred_by_strength: dict[float, np.ndarray], ages: np.ndarray,
                          select: str) -> tuple[float, dict, dict]:
    """The strength whose validation ages score best by ``select`` (``mae`` or ``balanced_mae``), with
    both measures per strength (for the record)."""
    maes = {t: round(float(np.abs(p - ages).mean()), 4) for t, p in pred_by_strength.items()}
    balanced = {t: round(balanced_mae(p, ages), 4) for t, p in pred_by_strength.items()}
    by = maes if select == "mae" else balanced
    return min(by, key=by.get), maes, balanced


def train(cfg: Config, out: str | Path, resume: bool = False, quiet: bool = False,
          stop_at_step: int | None = None, restart: bool = False) -> dict:
    """Train into ``out``; ``resume``: continue from its checked checkpoint (``restart``: from scratch when
    it has no usable one, instead of refusing)."""
    return Trainer(cfg, Path(out), quiet=quiet, stop_at_step=stop_at_step).fit(resume=resume, restart=restart)
