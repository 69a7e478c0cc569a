"""Batch augmentation on tensors (the paper's flip, rotation, scaling, noise, and more).

Whole batches are transformed at once with one affine warp, so augmentation
costs little next to the network even on a CPU, and runs on the GPU there.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceage.core.preprocess import standardize
from faceage.train.config import AugmentConfig

GREY = torch.tensor([0.299, 0.587, 0.114])
# rows: output R, G, B from input R, G, B (the common sepia matrix)
SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def _chance(p: float, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _on(device, *tensors: torch.Tensor):
    """Per-image parameters (drawn and computed on the CPU) to the batch's device without a sync."""
    return [t.to(device, non_blocking=True) for t in tensors]


def _rows(mask: torch.Tensor, device) -> torch.Tensor | None:
    """Indices of the images a CPU mask selects, or None: a boolean mask on a GPU would wait for it."""
    return mask.nonzero().squeeze(1).to(device, non_blocking=True) if mask.any() else None


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid`` for square images, by broadcasting (its batched matmul is slow on CPU)."""
    coords = (torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1
    xs, ys = coords.view(1, 1, size), coords.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1)
    grid = torch.empty(theta.shape[0], size, size, 2, dtype=theta.dtype, device=theta.device)
    torch.add(t[:, 0] * xs + t[:, 2], t[:, 1] * ys, out=grid[..., 0])
    torch.add(t[:, 3] * xs + t[:, 5], t[:, 4] * ys, out=grid[..., 1])
    return grid


def augment(batch_uint8: torch.Tensor, cfg: AugmentConfig, mean, std, g: torch.Generator) -> torch.Tensor:
    """Augment a (N, 3, S, S) uint8 batch and return it normalised.

    All random draws come from ``g`` (a CPU generator), so a run is reproducible
    and resumable on any device. Geometry is one warp of the whole batch; the
    photometric changes are per-image scalars or touch only the images drawn for
    them, which keeps augmentation cheap next to the network on a small CPU.
    """
    n, device = batch_uint8.shape[0], batch_uint8.device
    size = batch_uint8.shape[-1]
    x = batch_uint8.float()

    # geometry: flip, rotation, scale and shift as one affine warp
    flip = torch.where(_chance(cfg.flip, n, g), -1.0, 1.0)
    angle = _uniform(-1, 1, n, g) * math.radians(cfg.rotate_deg) * _chance(cfg.rotate, n, g)
    lo, hi = cfg.scale_range
    scale = torch.where(_chance(cfg.scale, n, g), _uniform(lo, hi, n, g), 1.0)
    shift = _uniform(-1, 1, 2 * n, g).view(n, 2) * 2 * cfg.shift_frac
    shift = shift * _chance(cfg.shift, n, g)[:, None]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([cos * flip, -sin, shift[:, 0], sin * flip, cos, shift[:, 1]], 1)
    (theta,) = _on(device, theta)
    x = F.grid_sample(x, _affine_grid(theta, size), mode="bilinear", padding_mode="border", align_corners=False)

    # photometric: greyscale, brightness/contrast, resolution loss, noise (on the 0..255 scale)
    grey = _rows(_chance(cfg.grey, n, g), device)
    if grey is not None:
        x[grey] = (x[grey] * GREY.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    jitter = _chance(cfg.jitter, n, g).float()
    b = _uniform(-cfg.brightness, cfg.brightness, n, g) * 255 * jitter
    c = 1 + _uniform(-cfg.contrast, cfg.contrast, n, g) * jitter
    b, c = _on(device, b, c)
    # (x - m) * c + m + b with m the image mean, as one pass: x * c + (m * (1 - c) + b)
    m = x.mean(dim=(1, 2, 3))
    x = torch.addcmul((m * (1 - c) + b).view(n, 1, 1, 1), x, c.view(n, 1, 1, 1))
    blur = _rows(_chance(cfg.blur, n, g), device)
    if blur is not None:
        small = F.interpolate(x[blur], scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
        x[blur] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    noise = _rows(_chance(cfg.noise, n, g), device)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=g))
    if noise is not None:  # drawn where the batch lives, from a generator seeded by ``g``
        dg = torch.Generator(device).manual_seed(noise_seed)
        x[noise] += torch.randn((len(noise), *x.shape[1:]), generator=dg, device=device) * (cfg.noise_std * 255)
    if cfg.old_photo > 0:  # drawn last, so configs without it augment exactly as before
        x = old_photo(x.clamp_(0, 255), cfg, n, g)
    return standardize(x.clamp_(0, 255), mean, std)


def old_photo(x: torch.Tensor, cfg: AugmentConfig, n: int, g: torch.Generator) -> torch.Tensor:
    """Scanned-print look for the rows drawn: a sepia tint, faded contrast lifted towards paper white,
    a resolution loss of ``old_photo_scale`` (one factor per batch) and film grain."""
    device, size = x.device, x.shape[-1]
    pick = _chance(cfg.old_photo, n, g)
    rows = _rows(pick, device)
    k = int(pick.sum())
    tint = _uniform(0.3, 1.0, k, g) * _chance(0.6, k, g)  # sepia strength (0: none)
    fade = _uniform(0.55, 0.9, k, g)  # contrast kept
    lift = _uniform(0.0, 45.0, k, g)  # towards white
    lo, hi = cfg.old_photo_scale
    factor = float(_uniform(lo, hi, 1, g))
    grain = _uniform(0.01, 0.05, k, g) * 255
    grain_seed = int(torch.randint(0, 2**62, (1,), generator=g))
    if rows is None:
        return x
    tint, fade, lift, grain = _on(device, tint, fade, lift, grain)
    y = x[rows]
    sep = torch.einsum("oc,nchw->nohw", SEPIA.to(device), y).clamp_(0, 255)
    y = torch.lerp(y, sep, tint.view(-1, 1, 1, 1))
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * fade.view(-1, 1, 1, 1) + m + lift.view(-1, 1, 1, 1) * (1 - m / 255)
    small = F.interpolate(y, scale_factor=factor, mode="bilinear", align_corners=False, antialias=True)
    y = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    dg = torch.Generator(device).manual_seed(grain_seed)
    y += torch.randn((k, 1, size, size), generator=dg, device=device) * grain.view(-1, 1, 1, 1)
    x[rows] = y
    return x


def jpeg(images: np.ndarray, cfg: AugmentConfig, g: torch.Generator) -> np.ndarray:
    """JPEG-compress the drawn rows of an (N, H, W, 3) uint8 host batch at a quality from
    ``jpeg_quality`` (as photos are before they are cropped); other rows are returned untouched."""
    n = images.shape[0]
    pick = _chance(cfg.jpeg, n, g)
    lo, hi = cfg.jpeg_quality
    quality = torch.randint(int(lo), int(hi) + 1, (n,), generator=g)
    if not pick.any():
        return images
    out = np.array(images)
    for i in pick.nonzero().flatten().tolist():
        buf = io.BytesIO()
        Image.fromarray(out[i]).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out
