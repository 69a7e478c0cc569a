"""ShuffleNetV2 (Ma et al. 2018) with optional mixed attention (MA-SFV2, Liu et al. 2020).

The paper's Table 1 is data in :mod:`faceage.nets.spec`: ``STAGE_CHANNELS`` per width and
``STAGE_REPEATS``. Without attention the backbone is exactly torchvision's
ShuffleNetV2 (same layers, same parameter count).

Mixed attention in a unit: the branch output passes SE channel attention, then
CBAM spatial attention, then the branch input is added back (residual) before
concatenation and channel shuffle. In a downsampling unit the branch input has
other channels and twice the resolution, so there is no residual there (a
projection shortcut would add layers the paper does not describe): the
attended branch output is used as is.
"""
from __future__ import annotations

import torch
from torch import nn

from faceage.nets.attention import MixedAttention

from faceage.nets.spec import STAGE_REPEATS  # the paper's Table 1 (and STAGE_CHANNELS) are declared there


def shuffle_index(channels: int, groups: int = 2) -> torch.Tensor:
    """Channel order after a shuffle: (g, c/g) -> (c/g, g), as one constant gather.

    Equivalent to torchvision's view/transpose/reshape, but exports to ONNX as a
    single Gather instead of a chain of shape computations.
    """
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


def conv_bn(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """One ShuffleNetV2 unit: basic (stride 1, channel split) or downsampling (stride 2)."""

    def __init__(self, inp: int, oup: int, stride: int, attention: bool = False, se_reduction: int = 4) -> None:
        super().__init__()
        if stride == 1 and inp != oup:
            raise ValueError("a stride-1 unit keeps its channel count")
        self.stride = stride
        self.split = half = oup // 2  # a Python int: the channel split exports as a constant Split
        if stride > 1:
            self.branch1 = nn.Sequential(
                conv_bn(inp, inp, 3, stride, groups=inp, relu=False),
                conv_bn(inp, half, 1),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            conv_bn(inp if stride > 1 else half, half, 1),
            conv_bn(half, half, 3, stride, groups=half, relu=False),
            conv_bn(half, half, 1),
        )
        self.attention = MixedAttention(half, se_reduction) if attention else None
        self.register_buffer("shuffle", shuffle_index(oup), persistent=False)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2(x)
        if self.attention is not None:
            out = self.attention(out)
            if self.stride == 1:
                out = out + x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x[:, : self.split], x[:, self.split :]
            out = torch.cat((x1, self._branch(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self._branch(x)), dim=1)
        return out.index_select(1, self.shuffle)


class ShuffleNetV2(nn.Module):
    """The backbone up to global average pooling; returns (N, stages_out_channels[-1]) features."""

    def __init__(
        self,
        stages_out_channels: tuple[int, ...],
        stages_repeats: tuple[int, ...] = STAGE_REPEATS,
        attention: bool = False,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError("expected 3 stage repeats and 5 channel counts")
        self.out_channels = stages_out_channels[-1]
        self.conv1 = conv_bn(3, stages_out_channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        inp = stages_out_channels[0]
        for repeats, oup in zip(stages_repeats, stages_out_channels[1:4]):
            units = [InvertedResidual(inp, oup, 2, attention, se_reduction)]
            units += [InvertedResidual(oup, oup, 1, attention, se_reduction) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            inp = oup
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = conv_bn(inp, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return x.mean(dim=(2, 3))
