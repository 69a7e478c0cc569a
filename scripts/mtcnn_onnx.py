"""Build the ONNX files of the ``mtcnn`` face detector from facenet-pytorch's MTCNN weights.

The weights (P-Net, R-Net, O-Net of Zhang et al., 2016, as converted by facenet and
facenet-pytorch, MIT) come from the facenet-pytorch wheel on PyPI, read as tensors
(``torch.load(weights_only=True)``); this script defines the three networks, loads the
weights and exports each to ONNX with a free batch (and, for P-Net, free height and
width), float32, checking that ONNX Runtime gives the same outputs as PyTorch:

    python -m pip download --no-deps -d work/pkg facenet-pytorch==2.6.0
    python -m scripts.mtcnn_onnx work/pkg/facenet_pytorch-2.6.0-py3-none-any.whl --write

Without ``--write`` the files go to a temporary folder and only the check runs.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "src" / "faceage" / "face" / "mtcnn_models"


class _Stage(nn.Module):
    """Conv + PReLU (+ max-pool, ceil mode) blocks, then the heads: MTCNN's three networks share this shape."""

    def __init__(self, convs: list[tuple[int, int, int, tuple[int, int] | None]]):
        super().__init__()
        for i, (cin, cout, k, pool) in enumerate(convs, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k))
            setattr(self, f"prelu{i}", nn.PReLU(cout))
            if pool:
                setattr(self, f"pool{i}", nn.MaxPool2d(pool[0], pool[1], ceil_mode=True))
        self.n_convs = len(convs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n_convs + 1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if hasattr(self, f"pool{i}"):
                x = getattr(self, f"pool{i}")(x)
        return x


class PNet(_Stage):
    """Fully convolutional 12-px proposal net: face probability and box offsets every 2 px."""

    def __init__(self):
        super().__init__([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)])
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.features(x)
        return torch.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)


class RNet(_Stage):
    """24-px refinement net: face probability and box offsets per candidate."""

    def __init__(self):
        super().__init__([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.features(x).permute(0, 3, 2, 1).flatten(1)  # the original (Caffe) layout
        x = self.prelu4(self.dense4(x))
        return torch.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)


class ONet(_Stage):
    """48-px output net: face probability, box offsets and five landmarks per candidate."""

    def __init__(self):
        super().__init__([(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)])
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.features(x).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)


NETS = {"pnet": (PNet, 12, ["prob", "reg"]), "rnet": (RNet, 24, ["prob", "reg"]),
        "onet": (ONet, 48, ["prob", "reg", "landmarks"])}


def export(wheel: Path, out: Path) -> list[str]:
    """Each network's ONNX file written to ``out``; returns sha256 lines (``digest  name``)."""
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    lines = []
    with zipfile.ZipFile(wheel) as zf:
        for name, (cls, size, outputs) in NETS.items():
            state = torch.load(io.BytesIO(zf.read(f"facenet_pytorch/data/{name}.pt")), weights_only=True)
            net = cls().eval()
            net.load_state_dict(state)
            x = torch.rand(3, 3, size + (17 if name == "pnet" else 0), size + (5 if name == "pnet" else 0)) * 2 - 1
            axes = {"image": {0: "n", 2: "h", 3: "w"}} if name == "pnet" else {"image": {0: "n"}}
            axes.update({o: {0: "n"} for o in outputs})
            path = out / f"{name}.onnx"
            torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=outputs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            with torch.no_grad():
                want = [t.numpy() for t in net(x)]
            got = sess.run(None, {"image": x.numpy()})
            err = max(float(np.abs(a - b).max()) for a, b in zip(want, got))
            if err > 1e-4:
                raise SystemExit(f"{name}: ONNX Runtime differs from PyTorch by {err:g}")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{name}: {path.stat().st_size:,} bytes, max |ORT - torch| {err:.1e}, sha256 {digest}")
            lines.append(f"{digest}  {name}.onnx")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl (from PyPI)")
    ap.add_argument("--write", action="store_true", help=f"write the files into {OUT} (tracked)")
    args = ap.parse_args(argv)
    if args.write:
        lines = export(args.wheel, OUT)
        (OUT / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            export(args.wheel, Path(tmp))


if __name__ == "__main__":
    main()
