"""The joint loss of the paper (Eqs. 6-10): L = CE(logits, age) + lambda * |reg - age|, and the
optional terms that aim training at both ends of life.

Ages above 100 (UTKFace goes to 116) are clamped to 100 for the classifier,
which has one output per age 0..100; the regression term uses the true age.
With ``label_sigma > 0`` the one-hot target is replaced by a Gaussian over
neighbouring ages (label-distribution learning, DLDL); ``label_sigma_slope`` widens it
with age (a 5-year-old looks unlike a 7-year-old; a 65-year-old much like a 70-year-old),
so the young ends get sharp targets instead of a spread that leaks toward the twenties.
``mean_weight``/``var_weight`` add the mean-variance loss (Pan et al., CVPR 2018): the
squared error of the distribution's expectation, which is the reported age, and its
variance. The expectation term pulls the estimate itself, not just the top class, to the
true age, which is what shrinks the ends toward the middle when left to cross-entropy alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: the smallest label spread (years) when the spread grows with age from a small start
MIN_SIGMA = 0.5


def age_loss(
    logits: torch.Tensor,
    reg: torch.Tensor,
    age: torch.Tensor,
    reg_weight: float = 0.1,
    label_sigma: float = 0.0,
    label_sigma_slope: float = 0.0,
    mean_weight: float = 0.0,
    var_weight: float = 0.0,
) -> torch.Tensor:
    """The training loss; the keyword arguments are the config's ``loss`` section, key for key."""
    num_classes = logits.shape[-1]
    target = age.clamp(0, num_classes - 1)
    log_p = F.log_softmax(logits, dim=-1)
    ages = torch.arange(num_classes, device=logits.device, dtype=logits.dtype)
    if label_sigma > 0 or label_sigma_slope > 0:
        t = target.to(logits.dtype)
        sigma = (label_sigma + label_sigma_slope * t).clamp(min=MIN_SIGMA)
        dist = torch.exp(-0.5 * ((ages[None, :] - t[:, None]) / sigma[:, None]) ** 2)
        dist = dist / dist.sum(dim=1, keepdim=True)
        loss = -(dist * log_p).sum(dim=-1).mean()
    else:
        loss = F.nll_loss(log_p, target.long())
    if mean_weight or var_weight:
        p = log_p.exp()
        mean = p @ ages
        var = (p * (ages[None, :] - mean[:, None]) ** 2).sum(dim=-1)
        loss = loss + mean_weight * 0.5 * ((mean - target.to(mean.dtype)) ** 2).mean() + var_weight * var.mean()
    if reg_weight:
        loss = loss + reg_weight * (reg - age.to(reg.dtype)).abs().mean()
    return loss


def distilled_loss(logits: torch.Tensor, reg: torch.Tensor, age: torch.Tensor, teacher_logits: torch.Tensor,
                   weight: float, temperature: float = 1.0, reg_weight: float = 0.1, **terms) -> torch.Tensor:
    """The loss with a teacher: its distribution terms (``age_loss`` without regression) weighted ``1 - weight``
    against :func:`distill_loss` at ``weight``; the regression term stays whole, since the teacher has no say
    on the regression neuron (``weight = 1`` must not leave it untrained)."""
    hard = age_loss(logits, reg, age, reg_weight=0.0, **terms)
    soft = distill_loss(logits, teacher_logits, temperature)
    return (1 - weight) * hard + weight * soft + reg_weight * (reg - age.to(reg.dtype)).abs().mean()


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between the two age distributions at ``temperature``, times its square so the
    gradient keeps its scale as the temperature changes (Hinton et al., 2015)."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * t * t
