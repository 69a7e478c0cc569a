"""Inference backends behind one interface: aligned uint8 crops in, age distributions out.

A backend has ``record`` (the model's preprocessing record) and
``run(crops) -> (logits, reg)`` for an (N, S, S, 3) uint8 array. The torch
backend needs PyTorch; the ONNX Runtime backend does not.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from faceage.errors import WeightsError
from faceage.models.weights import ModelRecord

BACKENDS = ("auto", "torch", "onnx")


class Backend(Protocol):
    record: ModelRecord
    name: str

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_backend(path: str | Path, backend: str = "auto") -> str:
    """The runtime that :func:`load_backend` would use for ``path`` ("onnx" or "torch"), or the error it would
    raise: an unknown backend, or PyTorch missing for a model that needs it."""
    path = Path(path)
    if backend not in BACKENDS:
        raise WeightsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnx" or (backend == "auto" and path.suffix == ".onnx"):
        if path.suffix != ".onnx":
            raise WeightsError(f"{path}: --backend onnx needs an ONNX file; export this one first: "
                               f"faceage export {path} --format onnx --out model.onnx")
        return "onnx"
    if path.suffix == ".onnx":
        raise WeightsError(f"{path}: --backend torch needs a .safetensors file, not an ONNX one")
    if importlib.util.find_spec("torch") is None:
        raise WeightsError(
            f"{path}: this model needs PyTorch (not installed); install it (pip install 'faceage[train]') or export "
            f"the model for ONNX Runtime: faceage export {path} --format onnx --out model.onnx")
    return "torch"


def load_backend(path: str | Path, backend: str = "auto", device: str = "cpu") -> Backend:
    """``backend``: "torch", "onnx", or "auto" (the file's kind decides; torch for safetensors)."""
    path = Path(path)
    if check_backend(path, backend) == "onnx":
        from faceage.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(path)
    try:
        from faceage.runtime.torch_backend import TorchBackend
    except ImportError as exc:  # installed but broken
        raise WeightsError(f"{path}: this model needs PyTorch, which does not import ({exc})") from exc
    return TorchBackend(path, device=device)


def time_per_face(backends: dict[str, Backend], rounds: int = 5, repeats: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of one face (batch 1, the network alone) per backend, on a random crop.

    The backends are timed in alternating rounds and each keeps its fastest round's median, so a burst
    of load on a shared machine slows one round of every model rather than one model."""
    import time

    crops = {name: np.random.default_rng(0).integers(0, 256, (1, b.record.input_size, b.record.input_size, 3),
                                                      np.uint8) for name, b in backends.items()}
    best = {name: float("inf") for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            times = []
            for i in range(repeats + warmup):
                t = time.perf_counter()
                backend.run(crops[name])
                if i >= warmup:
                    times.append(time.perf_counter() - t)
            best[name] = min(best[name], 1000 * sorted(times)[len(times) // 2])
    return {name: round(v, 3) for name, v in best.items()}
