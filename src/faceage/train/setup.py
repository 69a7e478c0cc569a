"""What a training run is made of before its first step: precision, seeds, schedule, parameter
groups and starting weights (used by :class:`faceage.train.loop.Trainer`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from faceage.errors import ConfigError
from faceage.face.align import DLIB_CHIP, CropSpec
from faceage.nets.spec import ModelSpec
from faceage.train.config import Config, OptimConfig


def amp_dtype(device: torch.device, amp=True) -> torch.dtype | None:
    """The autocast dtype for ``run.amp`` on ``device``: bf16 where the GPU has it, else fp16; None = fp32."""
    if device.type != "cuda" or not amp:
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def batch_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one batch's augmentation."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, epoch, step, rank]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def lr_factor(epoch: int, optim: OptimConfig) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    warm = optim.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    if optim.schedule == "cosine":
        t = (epoch - warm) / max(1, optim.epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    return optim.gamma ** (epoch // optim.step_every)


def model_spec(cfg: Config) -> ModelSpec:
    m = cfg.model
    width = m.width if m.width is not None else ModelSpec.default_width(m.arch)
    try:
        return ModelSpec(arch=m.arch, width=width, se_reduction=m.se_reduction)
    except ValueError as exc:
        raise ConfigError(f"config model: {exc}") from exc


def param_groups(model: torch.nn.Module, backbone_scale: float) -> list[dict]:
    """One group (scale 1), or the backbone at ``backbone_scale`` and the age head at 1 (fine-tuning)."""
    if backbone_scale == 1.0:
        return [{"params": list(model.parameters())}]
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not n.startswith("head.")], "lr_scale": backbone_scale},
            {"params": [p for n, p in named if n.startswith("head.")], "lr_scale": 1.0}]


def load_init_weights(model: torch.nn.Module, spec: ModelSpec, size: int,
                      path: str | Path) -> tuple[CropSpec | None, Path]:
    """Copy a model's weights (a bundled name, file or run folder) into ``model`` (same network and input size),
    or dlib's face-recognition ResNet into a ``face_resnet`` backbone (the age head starts fresh); return the
    crop geometry the weights were trained on and the file they came from."""
    from faceage.models import locate
    from faceage.nets.dlib_format import INIT_NAME, default_path, face_descriptor_state_dict
    from faceage.models.weights import load_model

    if str(path) == INIT_NAME or str(path).endswith(".dat"):  # dlib's pretrained face network
        if spec.arch != "face_resnet":
            raise ConfigError(f"model.init {path} is dlib's face-recognition ResNet: set model.arch=face_resnet")
        file = default_path() if str(path) == INIT_NAME else Path(path)
        state = face_descriptor_state_dict(file)
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items()
                                        if k.startswith("backbone.")}, strict=True)
        return DLIB_CHIP, file
    file = locate(str(path), backend="torch")
    source, record = load_model(file)
    if record.model != spec or int(record.input_size) != size:
        raise ConfigError(f"model.init {path}: it is {record.model.to_dict()} at {record.input_size} px, the config asks "
                          f"for {spec.to_dict()} at {size} px; set model.* and data.input_size to match it")
    model.load_state_dict(source.state_dict(), strict=True)
    return record.crop, file
