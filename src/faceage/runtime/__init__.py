"""Inference backends behind one interface: aligned uint8 crops in, age distributions out.

A backend has ``record`` (the model's preprocessing record) and
``run(crops) -> (logits, reg)`` for an (N, S, S, 3) uint8 array. The torch
backend needs PyTorch; the ONNX Runtime backend does not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from faceage.errors import WeightsError
from faceage.weights import ModelRecord

BACKENDS = ("auto", "torch", "onnx")


class Backend(Protocol):
    record: ModelRecord
    name: str

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def load_backend(path: str | Path, backend: str = "auto", device: str = "cpu") -> Backend:
    """``backend``: "torch", "onnx", or "auto" (the file's kind decides; torch for safetensors)."""
    path = Path(path)
    if backend not in BACKENDS:
        raise WeightsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnx" or (backend == "auto" and path.suffix == ".onnx"):
        from faceage.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(path)
    try:
        from faceage.runtime.torch_backend import TorchBackend
    except ImportError as exc:
        raise WeightsError(
            f"{path}: this model needs PyTorch ({exc}); install it (pip install 'faceage[train]') or export the "
            f"model for ONNX Runtime: faceage export {path} --format onnx --out model.onnx"
        ) from exc
    return TorchBackend(path, device=device)
