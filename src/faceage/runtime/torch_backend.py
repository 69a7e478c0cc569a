"""PyTorch inference on aligned crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faceage.data.augment import normalize
from faceage.weights import load_model


class TorchBackend:
    name = "torch"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.model, self.record = load_model(path, device=device)
        self.device = torch.device(device)

    @torch.inference_mode()
    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = normalize(torch.from_numpy(np.ascontiguousarray(crops)).to(self.device), self.record.mean, self.record.std)
        logits, reg = self.model(x)
        return logits.float().cpu().numpy(), reg.float().cpu().numpy()
