"""The two halves of MA-SFV2's mixed attention (paper Fig. 3).

Channel attention is Squeeze-and-Excitation (Hu et al.); spatial attention is
CBAM's spatial module (Woo et al.). SENet's default reduction of 16 would leave
a single hidden unit in the 24-channel branches of a 0.5x network, so we use 4
(as MobileNetV3 and ShuffleNetV2+ do) with at least 8 hidden units.
"""
from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """s = sigmoid(W2 relu(W1 avgpool(x))); y = x * s (per channel)."""

    def __init__(self, channels: int, reduction: int = 4, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s


class SpatialAttention(nn.Module):
    """m = sigmoid(conv7x7([mean_c(x); max_c(x)])); y = x * m (per position)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class MixedAttention(nn.Module):
    """Channel attention, then spatial attention, as the paper orders them."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channel = SqueezeExcite(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
