"""The joint loss of the paper (Eqs. 6-10): L = CE(logits, age) + lambda * |reg - age|.

Ages above 100 (UTKFace goes to 116) are clamped to 100 for the classifier,
which has one output per age 0..100; the regression term uses the true age.
With ``label_sigma > 0`` the one-hot target is replaced by a Gaussian over
neighbouring ages (label-distribution learning, DLDL), an optional extension.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def age_loss(
    logits: torch.Tensor,
    reg: torch.Tensor,
    age: torch.Tensor,
    reg_weight: float = 0.1,
    label_sigma: float = 0.0,
) -> torch.Tensor:
    num_classes = logits.shape[-1]
    target = age.clamp(0, num_classes - 1)
    if label_sigma > 0:
        ages = torch.arange(num_classes, device=logits.device, dtype=logits.dtype)
        dist = torch.exp(-0.5 * ((ages[None, :] - target[:, None].to(logits.dtype)) / label_sigma) ** 2)
        dist = dist / dist.sum(dim=1, keepdim=True)
        cls = -(dist * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    else:
        cls = F.cross_entropy(logits, target.long())
    if reg_weight == 0:
        return cls
    return cls + reg_weight * (reg - age.to(reg.dtype)).abs().mean()
