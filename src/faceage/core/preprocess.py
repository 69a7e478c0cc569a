"""Aligned crop -> network input: the one preprocessing path of every model (numpy and Pillow only).

Training (the decoded cache), inference (both backends), evaluation and export all call these
functions, so a network sees at inference the pixels it saw in training. A model's record says
how its crops are made (``crop``, the aligner's geometry and pixel size) and what the network
takes (``input_size``, ``mean``, ``std``): a crop is resized to ``input_size`` here, once, with
Pillow's bilinear filter, and normalised as ``x * scale + shift`` per channel with
``scale = 1 / (255 * std)`` and ``shift = -mean / std``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """An HxWx3 uint8 crop as the network's size x size input (centre square first if not square)."""
    h, w = image.shape[:2]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
    if image.shape[0] != size:
        image = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))  # writable, unlike asarray
    return image


def input_batch(crops, size: int) -> np.ndarray:
    """Aligned crops (an (N, H, W, 3) uint8 array or a list of HxWx3 uint8 arrays) -> (N, size, size, 3)."""
    if isinstance(crops, np.ndarray) and crops.ndim == 4 and crops.shape[1:3] == (size, size):
        return np.ascontiguousarray(crops)
    resized = [resize_crop(np.asarray(c), size) for c in crops]
    if len(resized) == 1 and resized[0].flags.writeable:  # one crop: no copy (a batch has its own memory)
        return resized[0][None]
    return np.stack(resized)


def normalization(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift), each of shape (3,) float32, so that input = uint8 * scale + shift."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize(batch_uint8, mean, std):
    """(N, H, W, 3) or (N, 3, H, W) uint8 torch tensor -> normalised float (N, 3, H, W), on its device.
    (torch is not imported here: the tensor brings it.)"""
    x = batch_uint8
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    return standardize(x.float(), mean, std)


def standardize(x, mean, std):
    """A (N, 3, H, W) float torch tensor on the 0..255 scale, normalised in place with
    :func:`normalization`'s constants (the ones the numpy path and export use)."""
    scale, shift = (x.new_tensor(v).view(1, 3, 1, 1) for v in normalization(mean, std))
    return x.mul_(scale).add_(shift)


def normalize_nchw(batch_uint8: np.ndarray, mean, std) -> np.ndarray:
    """(N, S, S, 3) uint8 -> normalised (N, 3, S, S) float32 (the numpy form; torch and ONNX use the same
    ``normalization`` constants)."""
    scale, shift = normalization(mean, std)
    x = np.ascontiguousarray(batch_uint8.transpose(0, 3, 1, 2), dtype=np.float32)
    return x * scale.reshape(1, 3, 1, 1) + shift.reshape(1, 3, 1, 1)
