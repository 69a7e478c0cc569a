"""PyTorch inference on network-input crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faceage.core.preprocess import normalize
from faceage.models.weights import ModelRecord, load_model


class TorchBackend:
    name = "torch"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.model, self.record = load_model(path, device=device)
        self.device = torch.device(device)

    @classmethod
    def from_model(cls, model: torch.nn.Module, record: ModelRecord, device: torch.device) -> "TorchBackend":
        """A backend over a network in memory (training validation scores through it)."""
        self = cls.__new__(cls)
        self.model, self.record, self.device = model, record, torch.device(device)
        return self

    @torch.inference_mode()
    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        was_training = self.model.training
        self.model.eval()
        x = normalize(torch.from_numpy(np.ascontiguousarray(crops)).to(self.device), self.record.mean, self.record.std)
        logits, reg = self.model(x)
        self.model.train(was_training)
        return logits.float().cpu().numpy(), reg.float().cpu().numpy()
