"""GPU throughput check for faceage training and inference (run by benchmarks/gpu_check.sh).

Feeds the real training loop (faceage.train.loop.Trainer: augmentation, autocast,
channels-last, optional torch.compile, the uint8 cache on the GPU) a synthetic
in-memory uint8 cache, so nothing is decoded or downloaded. Each case trains one
warm-up epoch (compilation, cuDNN autotuning) and then times one epoch.

Environment: OUT (results folder, default ./gpu_check_out), GPU_CHECK_SMOKE=1 (tiny
sizes on the CPU, to check the script itself), GPU_CHECK_BUDGET (seconds; cases that
would start after it are skipped, default 150), GPU_CHECK_STEPS (timed steps per case).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faceage.train.config import Config, load_config
from faceage.data.sets import SplitData
from faceage.train.loop import Trainer
from faceage.train.setup import amp_dtype

SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
BUDGET = float(os.environ.get("GPU_CHECK_BUDGET", "200"))
T0 = time.perf_counter()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def synthetic(n: int, size: int, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return SplitData(images=images, ages=rng.integers(0, 101, n).astype(np.int64), samples=[])


def make_cfg(width: float, size: int, batch: int, compile_: bool | str, gpu_cache: bool, device: str) -> Config:
    return load_config("paper", {
        "model": {"width": width},
        "data": {"input_size": size},
        "optim": {"batch_size": batch, "epochs": 2},
        "run": {"compile": compile_, "gpu_cache": gpu_cache, "device": device, "amp": True,
                "channels_last": True},
    })


def train_case(name: str, width: float, size: int, batch: int, steps: int, compile_: bool | str, gpu_cache: bool,
               device: str, data_cache: dict) -> dict:
    key = (size, batch * steps)
    if key not in data_cache:
        data_cache[key] = {"train": synthetic(batch * steps, size), "val": synthetic(64, size, 1)}
    cfg = make_cfg(width, size, batch, compile_, gpu_cache, device)
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(cfg, Path(tmp), quiet=True, data=data_cache[key])
        t.setup()
        t.build_step_model()
        dev = t.device
        w0 = time.perf_counter()
        t.train_epoch()  # warm-up: compilation, autotuning, the cache copied to the GPU
        sync(dev)
        warm = time.perf_counter() - w0
        t.epoch = 1
        s0 = time.perf_counter()
        loss, _ = t.train_epoch()
        sync(dev)
        dt = time.perf_counter() - s0
        # the input pipeline alone (gather + augment), to show whether training is input-bound
        perm = torch.randperm(batch * steps)
        sync(dev)
        p0 = time.perf_counter()
        for step, x, y in t._batches(perm, steps):
            pass
        sync(dev)
        pipe = time.perf_counter() - p0
        mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"case": name, "kind": "train", "width": width, "size": size, "batch": batch, "steps": steps,
            "compile": compile_, "gpu_cache": gpu_cache,
            "amp": str(amp_dtype(dev, True)).replace("torch.", "") if dev.type == "cuda" else "fp32",
            "img_s": round(batch * steps / dt, 1), "input_pipeline_img_s": round(batch * steps / pipe, 1),
            "warmup_s": round(warm, 1), "loss": round(loss, 3), "max_mem_gib": mem and round(mem, 2)}


@torch.no_grad()
def infer_case(name: str, width: float, size: int, batch: int, iters: int, device: str) -> dict:
    from faceage.core.preprocess import normalize
    from faceage.nets.model import AgeNet
    from faceage.nets.spec import ModelSpec

    dev = torch.device(device)
    model = AgeNet(ModelSpec(arch="ma_sfv2", width=width)).to(dev).eval().to(memory_format=torch.channels_last)
    x8 = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=dev)
    dtype = amp_dtype(dev, True)

    def step():
        x = normalize(x8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return model(x)

    for _ in range(3):
        step()
    sync(dev)
    s0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    dt = time.perf_counter() - s0
    return {"case": name, "kind": "inference", "width": width, "size": size, "batch": batch, "steps": iters,
            "compile": False, "gpu_cache": None, "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
            "img_s": round(batch * iters / dt, 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    out = Path(os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not SMOKE
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, int(os.environ.get("GPU_CHECK_THREADS", "1"))))
    if SMOKE:  # the same cases, tiny, on the CPU: checks the script, measures nothing
        big, small, batch, steps, iters = (0.5, 32), (0.5, 32), 8, 2, 2
    else:
        steps = int(os.environ.get("GPU_CHECK_STEPS", "30"))
        big, small, batch, iters = (2.0, 224), (0.5, 112), 128, 20
    cases = [  # most important first: later ones are skipped when the time budget is spent
        ("train paper", "train", big, False, True),
        ("train paper, compile reduce-overhead (CUDA graphs)", "train", big, "reduce-overhead", True),
        ("train paper, compile", "train", big, True, True),
        ("train small", "train", small, False, True),
        ("train paper, host cache (pinned)", "train", big, False, False),
        ("inference paper", "infer", big, False, None),
        ("inference small", "infer", small, False, None),
        ("train small, compile", "train", small, True, True),
    ]
    if not cuda:  # torch.compile on a CPU needs a C++ toolchain and minutes: not what this checks
        cases = [c for c in cases if not c[3]]
    env = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or 'unknown'})",
           "torch": torch.__version__, "python": sys.version.split()[0], "smoke": SMOKE,
           "bf16": bool(cuda and torch.cuda.is_bf16_supported())}
    print(f"# faceage gpu_check on {env['device']} (torch {env['torch']}{', SMOKE' if SMOKE else ''})", flush=True)
    results, data_cache = [], {}
    for label, kind, (width, size), comp, gcache in cases:
        extra = ", gpu_cache" if gcache else ""
        name = f"{label} {width}x {size}px b{batch if kind == 'train' else (16 if SMOKE else 256)}{extra}"
        if time.perf_counter() - T0 > BUDGET:
            results.append({"case": name, "skipped": f"time budget {BUDGET:.0f}s spent"})
            print(f"skipped {name}: budget spent", flush=True)
            continue
        try:
            if kind == "train":
                r = train_case(name, width, size, batch, steps, comp, gcache, device, data_cache)
            else:
                r = infer_case(name, width, size, 16 if SMOKE else 256, iters, device)
        except Exception as exc:  # report and go on: one failing case must not hide the others
            r = {"case": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
        results.append(r)
        print(json.dumps(r), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    report = {"env": env, "results": results, "seconds": round(time.perf_counter() - T0, 1),
              "target": "paper config (2.0x, 224 px, batch 128) >= 3000 training img/s on one H100"}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    lines = [f"Device: {env['device']}, torch {env['torch']}" + (" (CPU smoke run: not a measurement)" if SMOKE else ""),
             "", "| case | img/s | input pipeline img/s | amp | warm-up s | peak GiB |", "|---|---:|---:|---|---:|---:|"]
    for r in results:
        if "img_s" in r:
            lines.append(f"| {r['case']} | {r['img_s']:,.0f} | {r.get('input_pipeline_img_s') or '-'} | {r['amp']} | "
                         f"{r.get('warmup_s', '-')} | {r.get('max_mem_gib') or '-'} |")
        else:
            lines.append(f"| {r['case']} | {r.get('error') or r.get('skipped')} | | | | |")
    table = "\n".join(lines)
    (out / "gpu_check.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report['seconds']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
