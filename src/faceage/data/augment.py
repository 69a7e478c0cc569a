"""Batch augmentation on tensors (the paper's flip, rotation, scaling, noise, and more).

Whole batches are transformed at once with one affine warp, so augmentation
costs little next to the network even on a CPU, and runs on the GPU there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GREY = torch.tensor([0.299, 0.587, 0.114])


def normalize(batch_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, H, W, 3) or (N, 3, H, W) uint8 -> normalised float (N, 3, H, W)."""
    x = batch_uint8
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    return standardize(x.float().div_(255.0), mean, std)


def standardize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, for a (N, 3, H, W) float batch on the 0..1 scale."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _chance(p: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=g) < p).to(device)


def _uniform(lo: float, hi: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device)


def augment(batch_uint8: torch.Tensor, cfg: dict, mean, std, g: torch.Generator) -> torch.Tensor:
    """Augment a (N, 3, S, S) uint8 batch and return it normalised.

    All random draws come from ``g`` (a CPU generator), so a run is reproducible
    and resumable on any device. Each transform touches only the images drawn
    for it, which keeps augmentation cheap next to the network on a small CPU.
    """
    n, device = batch_uint8.shape[0], batch_uint8.device
    x = batch_uint8.float().div_(255.0)

    # geometry: flip by indexing, rotation/scale/shift as one affine warp of the drawn images
    flip = _chance(cfg["flip"], n, g, device)
    x[flip] = x[flip].flip(-1)
    rot = _chance(cfg["rotate"], n, g, device)
    angle = _uniform(-1, 1, n, g, device) * math.radians(cfg["rotate_deg"]) * rot
    lo, hi = cfg["scale_range"]
    zoom = _chance(cfg["scale"], n, g, device)
    scale = torch.where(zoom, _uniform(lo, hi, n, g, device), 1.0)
    move = _chance(cfg["shift"], n, g, device)
    shift = _uniform(-1, 1, 2 * n, g, device).view(n, 2) * 2 * cfg["shift_frac"] * move[:, None]
    warp = rot | zoom | move
    if warp.any():
        cos, sin = torch.cos(angle[warp]) / scale[warp], torch.sin(angle[warp]) / scale[warp]
        sx, sy = shift[warp, 0], shift[warp, 1]
        theta = torch.stack([torch.stack([cos, -sin, sx], 1), torch.stack([sin, cos, sy], 1)], 1)
        part = x[warp]
        grid = F.affine_grid(theta, list(part.shape), align_corners=False)
        x[warp] = F.grid_sample(part, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # photometric: greyscale, brightness/contrast, resolution loss, noise
    grey = _chance(cfg["grey"], n, g, device)
    if grey.any():
        x[grey] = (x[grey] * GREY.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    jitter = _chance(cfg["jitter"], n, g, device)
    b = _uniform(-cfg["brightness"], cfg["brightness"], n, g, device).view(n, 1, 1, 1)
    c = 1 + _uniform(-cfg["contrast"], cfg["contrast"], n, g, device).view(n, 1, 1, 1)
    if jitter.any():
        part = x[jitter]
        mean_px = part.mean(dim=(1, 2, 3), keepdim=True)
        x[jitter] = (part - mean_px) * c[jitter] + mean_px + b[jitter]
    blur = _chance(cfg["blur"], n, g, device)
    if blur.any():
        size = x.shape[-1]
        small = F.interpolate(x[blur], scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
        x[blur] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    noise = _chance(cfg["noise"], n, g, device)
    if noise.any():
        k = int(noise.sum())
        x[noise] += torch.randn((k, *x.shape[1:]), generator=g).to(device) * cfg["noise_std"]
    return standardize(x.clamp_(0, 1), mean, std)
