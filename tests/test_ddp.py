"""DistributedDataParallel on CPU: 2 gloo processes vs one process with the same global batch.

Tolerance. With SyncBatchNorm (``run.sync_bn``, the default) 2-process DDP computes the
same function as one process on the global batch; only float32 summation order differs
(gradient all-reduce, BatchNorm statistics from partial sums). The first epoch's train
loss therefore agrees to 1e-4 (relative), and after 2 epochs x 4 Adam steps the models'
logits on every image agree to LOGIT_ATOL (observed: ~1e-3). Raw weights are not compared
element-wise: BatchNorm makes some parameters (e.g. a BN bias feeding another conv+BN) have
an exactly-zero true gradient, Adam rescales the float noise there into full lr-sized
steps, so such weights differ by up to lr x steps while the function does not. Without
SyncBatchNorm (per-rank statistics over half the batch) the logits differ ~100x more
(1 epoch: 0.13 vs 7e-4), which is why DDP converts BatchNorm by default.
"""
import csv
import os
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from conftest import synthetic_dataset, tiny_config
from faceage.train.loop import Trainer, train

LOGIT_ATOL = 1e-2
NO_AUGMENT = {"augment.flip": 0.0, "augment.rotate": 0.0, "augment.scale": 0.0, "augment.shift": 0.0,
              "augment.noise": 0.0, "augment.grey": 0.0, "augment.jitter": 0.0, "augment.blur": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, jobs: list) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)  # a hung collective fails the test, not CI
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    # one process group for all jobs (the trainer uses a group it finds and leaves it open)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for cfg, out, kwargs in jobs:
            try:
                train(cfg, out, quiet=True, **kwargs)
            except KeyboardInterrupt:
                pass  # the "killed" run
    finally:
        dist.destroy_process_group()


def _run_ddp(jobs: list, world: int = 2) -> None:
    mp.spawn(_worker, args=(world, _free_port(), jobs), nprocs=world, join=True)


def _weights(run):
    return load_file(run / "last.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One spawn of 2 gloo processes (a full run, a killed one, its resume) and a single-process reference."""
    tmp = tmp_path_factory.mktemp("ddp")
    manifest = synthetic_dataset(tmp / "data")
    cfg = tiny_config(manifest, tmp / "cache", **NO_AUGMENT, **{"optim.epochs": 2})  # global batch 8, 4 steps/epoch
    train(cfg, tmp / "single", quiet=True)  # also builds the cache
    _run_ddp([
        (cfg, tmp / "ddp", {}),
        (cfg, tmp / "killed", {"stop_at_step": 5}),  # in the middle of epoch 2
        (cfg, tmp / "killed", {"resume": True}),
    ])
    return tmp, cfg


def _logits(run):
    import numpy as np

    from faceage.runtime.torch_backend import TorchBackend
    from faceage.core.scoring import score

    images = np.load(next((run.parent / "cache").glob("*.npy")))
    scores = score(TorchBackend(run / "last.safetensors"), images, "none")
    return scores.logits, scores.reg


@pytest.mark.slow  # the 2-process spawn takes ~50 s on 2 shared CPU cores
def test_ddp_matches_single_process(runs):
    tmp, _ = runs
    (la, ra), (lb, rb) = _logits(tmp / "single"), _logits(tmp / "ddp")
    diff = float(abs(la - lb).max())
    print(f"DDP (2 x gloo, sync BN) vs single process: max |d logit| = {diff:.2e} (logits up to "
          f"{float(abs(la).max()):.2f}), max |d reg| = {float(abs(ra - rb).max()):.2e}")
    assert diff < LOGIT_ATOL and float(abs(ra - rb).max()) < 10 * LOGIT_ATOL
    a = list(csv.DictReader(open(tmp / "single" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp / "ddp" / "metrics.csv")))
    assert [r["epoch"] for r in b] == ["1", "2"]
    assert float(b[0]["train_loss"]) == pytest.approx(float(a[0]["train_loss"]), rel=1e-4)
    for ra_, rb_ in zip(a, b):  # train loss (summed over ranks) and validation (gathered from ranks)
        for key in ("train_loss", "val_loss", "val_mae_dex"):
            assert float(rb_[key]) == pytest.approx(float(ra_[key]), rel=1e-2, abs=1e-2), key


@pytest.mark.slow  # the 2-process spawn takes ~50 s on 2 shared CPU cores
def test_only_rank0_writes_and_checkpoint_loads_in_one_process(runs):
    tmp, cfg = runs
    files = sorted(p.name for p in (tmp / "ddp").iterdir())
    assert not [f for f in files if f.endswith(".tmp")]
    state = torch.load(tmp / "ddp" / "last.pt", map_location="cpu", weights_only=True)
    assert not [k for k in state["model"] if k.startswith(("module.", "_orig_mod."))]
    from faceage.models.weights import load_model

    model, record = load_model(tmp / "ddp" / "best.safetensors")
    assert record.training["world_size"] == 2 and record.input_size == 32
    with torch.no_grad():
        logits, reg = model.eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 101)
    # a single process continues the DDP run for a 4th epoch
    cont = tmp / "continued"
    shutil.copytree(tmp / "ddp", cont)
    summary = Trainer(cfg.override({"optim": {"epochs": 3}}), cont, quiet=True).fit(resume=True)
    assert summary["epochs"] == 3
    assert [r["epoch"] for r in csv.DictReader(open(cont / "metrics.csv"))] == ["1", "2", "3"]


@pytest.mark.slow  # the 2-process spawn takes ~50 s on 2 shared CPU cores
def test_killed_ddp_run_resumes_to_the_same_weights(runs):
    tmp, _ = runs
    diff = _max_diff(_weights(tmp / "ddp"), _weights(tmp / "killed"))
    assert diff == 0.0, diff
    assert [r["epoch"] for r in csv.DictReader(open(tmp / "killed" / "metrics.csv"))] == ["1", "2"]


def test_gpu_cache_and_prefetch_threads_give_the_same_weights(tmp_path):
    """The fast-path input options change where batches are made, never what they hold."""
    manifest = synthetic_dataset(tmp_path / "data")
    base = {"optim.epochs": 1}
    train(tiny_config(manifest, tmp_path / "cache", **base), tmp_path / "plain", quiet=True)
    fast = tiny_config(manifest, tmp_path / "cache", **base, **{"run.gpu_cache": True, "run.prefetch": 2})
    train(fast, tmp_path / "fast", quiet=True)
    assert _max_diff(_weights(tmp_path / "plain"), _weights(tmp_path / "fast")) == 0.0


def test_amp_dtype_and_batch_checks(tmp_path):
    from faceage.errors import ConfigError
    from faceage.train.config import load_config
    from faceage.train.setup import amp_dtype, batch_seed

    assert amp_dtype(torch.device("cpu"), True) is None
    if torch.cuda.is_available():
        assert amp_dtype(torch.device("cuda"), "fp16") == torch.float16
    assert batch_seed(0, 1, 2, 0) != batch_seed(0, 1, 2, 1) != batch_seed(0, 1, 3, 1)
    with pytest.raises(ConfigError, match="run.amp"):
        load_config("cpu", ["run.amp=fp8"])
    cfg = load_config("cpu", ["run.gpu_cache=true", "run.sync_bn=false", "run.prefetch=2"])
    assert cfg.run.gpu_cache is True


def test_global_batch_must_split_evenly(tmp_path, monkeypatch):
    from faceage.errors import ConfigError
    from faceage.train import distributed as ddp

    manifest = synthetic_dataset(tmp_path / "data", n=16)
    cfg = tiny_config(manifest, tmp_path / "cache", **{"optim.batch_size": 7})
    monkeypatch.setattr(ddp, "setup", lambda name: ddp.DistInfo(rank=0, world_size=2))
    monkeypatch.setattr(ddp, "broadcast_object", lambda obj, info, src=0: obj)
    monkeypatch.setattr(ddp, "barrier", lambda info: None)
    with pytest.raises(ConfigError, match="divisible"):
        Trainer(cfg, tmp_path / "run", quiet=True).setup()
