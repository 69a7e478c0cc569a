"""The age head (paper Eqs. 6-10): 101-way classifier, then a 1-neuron regression behind it."""
from __future__ import annotations

import torch
from torch import nn

from faceage.nets.spec import NUM_AGES  # ages 0..100; older labels are clamped to 100 for the classifier


class AgeHead(nn.Module):
    """features -> (logits over ages 0..100, regression age).

    ``standardize``: BatchNorm over the features first. A pretrained backbone's pooled features can
    sit far from zero with little spread (dlib's ResNet: mean 1.16, spread 0.17 per feature), which a
    fresh linear layer learns from very slowly; standardised, the head learns in one epoch."""

    def __init__(self, in_features: int, num_classes: int = NUM_AGES, standardize: bool = False) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_features) if standardize else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)
        self.reg = nn.Linear(num_classes, 1)  # the paper's "LastFC", fed by the 101 logits
        nn.init.constant_(self.reg.bias, 30.0)  # start near a typical age, not 0

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(self.norm(features))
        return logits, self.reg(logits).squeeze(-1)

