"""Age models by name: ``sfv2`` (plain ShuffleNetV2) and ``ma_sfv2`` (with mixed attention)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from faceage.nets.head import NUM_AGES, AgeHead
from faceage.nets.shufflenetv2 import STAGE_CHANNELS, STAGE_REPEATS, ShuffleNetV2

ARCHS = {"sfv2": False, "ma_sfv2": True}  # name -> uses mixed attention


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network; stored with its weights."""

    arch: str = "ma_sfv2"
    width: float = 0.5
    se_reduction: int = 4
    num_classes: int = NUM_AGES

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {sorted(ARCHS)}")
        if float(self.width) not in STAGE_CHANNELS:
            raise ValueError(f"unknown width {self.width}; choose one of {sorted(STAGE_CHANNELS)}")

    @property
    def name(self) -> str:
        return f"{self.arch}_{self.width:g}x"

    def to_dict(self) -> dict:
        return asdict(self)


class AgeNet(nn.Module):
    """Backbone + age head. ``forward`` returns (logits, regression)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ShuffleNetV2(
            STAGE_CHANNELS[float(spec.width)], STAGE_REPEATS, attention=ARCHS[spec.arch], se_reduction=spec.se_reduction
        )
        self.head = AgeHead(self.backbone.out_channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def create_model(arch: str = "ma_sfv2", width: float = 0.5, **kwargs) -> AgeNet:
    return AgeNet(ModelSpec(arch=arch, width=width, **kwargs))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on a 3 x input_size x input_size image.

    Uses PyTorch's own FLOP counter (convolutions and matrix products; it counts
    2 FLOPs per multiply-add), so element-wise work such as attention gating is
    not included.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, input_size, input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
