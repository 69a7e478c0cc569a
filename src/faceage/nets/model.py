"""Age models by name: ``sfv2`` (plain ShuffleNetV2), ``ma_sfv2`` (with mixed attention) and
``face_resnet`` (dlib's face-recognition ResNet, for fine-tuning from its pretrained weights)."""
from __future__ import annotations

import torch
from torch import nn

from faceage.nets import face_resnet
from faceage.nets.head import AgeHead
from faceage.nets.shufflenetv2 import ShuffleNetV2
from faceage.nets.spec import STAGE_REPEATS, ModelSpec


class AgeNet(nn.Module):
    """Backbone + age head. ``forward`` returns (logits, regression)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.arch == "face_resnet":
            self.backbone = face_resnet.FaceResNet()
        else:
            self.backbone = ShuffleNetV2(
                spec.channels, STAGE_REPEATS, attention=spec.attention, se_reduction=spec.se_reduction
            )
        self.head = AgeHead(self.backbone.out_channels, spec.num_classes, standardize=spec.arch == "face_resnet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def input_normalization(spec: ModelSpec) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a pretrained network's weights expect; None: the trainer's default."""
    if spec.arch == "face_resnet":
        return face_resnet.MEAN, face_resnet.STD
    return None


def create_model(arch: str = "ma_sfv2", width: float | None = None, **kwargs) -> AgeNet:
    """A network by name; ``width`` None: the architecture's default (0.5, or 1.0 for face_resnet)."""
    return AgeNet(ModelSpec(arch=arch, width=ModelSpec.default_width(arch) if width is None else width, **kwargs))


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
