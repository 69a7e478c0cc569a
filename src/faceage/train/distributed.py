"""Multi-GPU / multi-node training with PyTorch DistributedDataParallel, launched by ``torchrun``.

Nothing here is a home-made engine: the process group, gradient all-reduce and
SyncBatchNorm are PyTorch's. This module only

- reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``) and starts the process group, ``nccl`` on GPUs and
  ``gloo`` on CPUs;
- holds the small collective helpers the training loop needs (broadcast a Python
  object, gather validation predictions, sum the epoch's loss);
- converts BatchNorm to SyncBatchNorm: ``torch.nn.SyncBatchNorm`` on GPUs, and on CPUs
  (where PyTorch's refuses to run) :class:`CpuSyncBatchNorm`, the same statistics via
  the autograd-aware ``torch.distributed.nn.all_reduce``, so the 2-process CPU test can
  compare DDP with a single process tightly.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets a :class:`DistInfo` with
``world_size == 1`` and every helper is a no-op, so the loop has one code path.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

# finish() scores the best weights on rank 0 alone while the others wait: allow it time
TIMEOUT = timedelta(minutes=int(os.environ.get("FACEAGE_DIST_TIMEOUT_MIN", "30")))


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # we started the process group, so we end it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU; ``cuda`` -> ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def setup(device_name: str) -> DistInfo:
    """Join the process group ``torchrun`` describes (or one a caller already started).

    Returns a single-process :class:`DistInfo` when not launched by ``torchrun``.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = pick_device(device_name, local)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistInfo(rank, world, local, dev, dist.get_backend(), owns_group=False)
    world = env_world_size()
    if world <= 1:
        dev = pick_device(device_name, 0)
        return DistInfo(device=dev)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device_name, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    try:
        dist.init_process_group(backend, init_method="env://", timeout=TIMEOUT, **kwargs)
    except TypeError:  # torch < 2.3 has no device_id
        dist.init_process_group(backend, init_method="env://", timeout=TIMEOUT)
    return DistInfo(rank, world, local, dev, backend, owns_group=True)


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


@contextlib.contextmanager
def rank0_first(info: DistInfo):
    """Run the body on global rank 0, then on each node's local rank 0, then everywhere else.

    For work that writes a shared file (the decoded image cache): rank 0 builds it;
    on a shared file system everyone else then just reads it, and on node-local disks
    each node's first process builds its own copy before its siblings read it.
    """
    if not info.enabled:
        yield
        return
    if info.rank == 0:
        yield
    barrier(info)
    if info.rank != 0 and info.local_rank == 0:
        yield
    barrier(info)
    if info.rank != 0 and info.local_rank != 0:
        yield


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """``obj`` from rank ``src`` on every rank (pickled; fine for checkpoints and summaries)."""
    if not info.enabled:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=info.device if info.backend == "nccl" else None)
    return box[0]


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """This rank's contiguous share [start, stop) of n items (the last ranks may get fewer, or none)."""
    per = -(-n // info.world_size)
    start = min(n, info.rank * per)
    return start, min(n, start + per)


def gather_rows(part: torch.Tensor, n: int, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``shard_range`` rows back into the full (n, ...) tensor, on every rank."""
    if not info.enabled:
        return part
    per = -(-n // info.world_size)
    dev = info.device if info.backend == "nccl" else torch.device("cpu")
    padded = torch.zeros((per, *part.shape[1:]), dtype=part.dtype, device=dev)
    padded[: len(part)] = part.to(dev)
    out = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(out, padded)
    return torch.cat(out)[:n].cpu()


# -- SyncBatchNorm ----------------------------------------------------------------------------------
class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all ranks, for CPU (gloo) process groups.

    ``torch.nn.SyncBatchNorm`` only runs on accelerators. This computes the global mean
    and (biased) variance with ``torch.distributed.nn.all_reduce``, which is
    differentiable, so gradients flow through the shared statistics as they do in
    PyTorch's kernel. The state dict is exactly BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn import functional as dnn

        c = x.shape[1]
        # the loop gives every rank an equal share, so the global count needs no communication;
        # one all-reduce of [sum x, sum x^2] (in float64) gives the mean and the biased variance
        n = float(x.numel() // c * dist.get_world_size())
        xd = x.double()
        with warnings.catch_warnings():  # its deprecation notice points to a private API
            warnings.simplefilter("ignore", FutureWarning)
            sums = dnn.all_reduce(torch.cat([xd.sum(dim=(0, 2, 3)), (xd * xd).sum(dim=(0, 2, 3))]))
        mean = (sums[:c] / n).to(x.dtype)
        var = (sums[c:] / n - (sums[:c] / n) ** 2).clamp_min(0).to(x.dtype)
        d = x - mean.view(1, c, 1, 1)
        y = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (PyTorch's on GPUs, :class:`CpuSyncBatchNorm` on CPUs)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
