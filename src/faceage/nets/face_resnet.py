"""dlib's face-recognition ResNet (King 2017) as a PyTorch module: a face-pretrained backbone.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``), declared as data in
:data:`LEVELS`. It was trained on about 3 million faces of 7,485 people for a 128-D metric
(LFW 99.38%); its weights are public domain and ship in the ``face-recognition-models``
package, which :mod:`faceage.nets.dlib_format` reads.

Layer for layer, as dlib computes it (the parity test holds it to dlib's own descriptors):

- stem: 7x7 conv stride 2 *without padding* (dlib pads only stride-1 layers), scale-and-shift,
  ReLU, 3x3 max-pool stride 2 without padding: 150 -> 72 -> 35;
- residual blocks ``relu(x + affine(conv3(relu(affine(conv3(x))))))``; the first block of a level
  halves the size with an unpadded stride-2 conv, and its shortcut is a 2x2 average pool whose
  output is added with dlib's ``add_prev`` rule: tensors of different shape are added top-left
  aligned, the missing channels and pixels counting as zero (35 -> 17 -> 8 -> 4/3 -> 2);
- global average pool -> 256 features (the age head's input); dlib's 128-D ``fc_no_bias``
  metric layer is :class:`FaceDescriptor`'s, used for parity and nothing else.

dlib's ``affine`` layers are batch normalisation folded into a per-channel scale and shift.
Here they stay exactly that (:class:`Affine`, learnable, no batch statistics): fine-tuning then
starts from the pretrained function at step 0, and 32-64-face batches from ~25k photos never
replace the normalisation estimated on 3 million faces with a noisy one (the choice of
"frozen BatchNorm" in detection fine-tuning).

Input: 150x150 RGB, ``(pixel - (122.782, 117.001, 104.298)) / 256`` (:data:`MEAN_RGB`, :data:`DIVISOR`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (channels, blocks, the first block halves the size): alevel4 .. alevel0, input to output
LEVELS: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))
STEM_CHANNELS = 32
FEATURES = 256  # pooled features, the age head's input
DESCRIPTOR = 128  # dlib's metric layer
INPUT_SIZE = 150
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image averages (0..255)
DIVISOR = 256.0  # dlib divides by 256, not 255
#: the same normalisation as a model record's mean and std (``(x / 255 - mean) / std`` on 0..255 pixels)
MEAN = tuple(v / 255.0 for v in MEAN_RGB)
STD = (DIVISOR / 255.0,) * 3


class Affine(nn.Module):
    """Per-channel scale and shift (dlib's ``affine``: BatchNorm with its statistics folded in)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum of two (N, C, H, W) tensors, top-left aligned, zeros where one is smaller."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:  # F.pad's order: last dim first
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """``relu(shortcut(x) + affine(conv(relu(affine(conv(x))))))``; the down block's first conv has stride 2."""

    def __init__(self, inp: int, out: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(inp, out, 3, 2 if down else 1, 0 if down else 1)
        self.affine1 = Affine(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1)
        self.affine2 = Affine(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_prev(y, F.avg_pool2d(x, 2, 2)) if self.down else y + x)


class FaceResNet(nn.Module):
    """The backbone: 150x150 image (normalised as above) -> 256 pooled features."""

    out_channels = FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, STEM_CHANNELS, 7, 2, 0), Affine(STEM_CHANNELS), nn.ReLU(),
                                  nn.MaxPool2d(3, 2))
        blocks, inp = [], STEM_CHANNELS
        for channels, count, down in LEVELS:
            for i in range(count):
                blocks.append(ResBlock(inp, channels, down and i == 0))
                inp = channels
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class FaceDescriptor(nn.Module):
    """dlib's whole metric network: backbone + 128-D ``fc_no_bias`` (the face descriptor)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = FaceResNet()
        self.fc = nn.Linear(FEATURES, DESCRIPTOR, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))

    @staticmethod
    def normalize(chips_uint8: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB chips -> the network's input, as dlib's ``input_rgb_image`` makes it."""
        x = chips_uint8.permute(0, 3, 1, 2).float()
        return (x - x.new_tensor(MEAN_RGB).view(1, 3, 1, 1)) / DIVISOR
