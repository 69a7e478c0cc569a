"""Every architecture and width pinned: a seeded network on a seeded input, its outputs compared with
tests/data/arch_goldens.json (in the style of torchvision's ``_assert_expected``).

A change to a layer, the stage tables (faceage.nets.spec), the attention or the head changes these
outputs and fails here. When the change is intended, regenerate on purpose and commit the file with it:

    FACEAGE_ACCEPT_GOLDENS=1 python -m pytest tests/test_arch_goldens.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from faceage.nets.model import create_model
from faceage.nets.spec import ARCHS, FIXED_ARCHS, WIDTHS

GOLDENS = Path(__file__).parent / "data" / "arch_goldens.json"
ACCEPT = os.environ.get("FACEAGE_ACCEPT_GOLDENS") == "1"
SIZE = 64  # small input: every width runs in well under a second
FIXED_SIZE = 112  # dlib's face network pads nothing at stride 2: it needs about 100 px
#: every network there is: each ShuffleNetV2 at every width, each network of one shape once
NETWORKS = [(a, w) for a in sorted(ARCHS) for w in ((1.0,) if a in FIXED_ARCHS else WIDTHS)]


def _seeded(arch: str, width: float) -> nn.Module:
    """The network with seeded weights that keep the signal's scale through every layer (PyTorch's default
    initialisation shrinks it until the biases alone decide the output, which would pin little), and
    BatchNorm statistics that are not the identity, in eval mode."""
    torch.manual_seed(0)
    model = create_model(arch, width).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.normal_(m.bias, std=0.1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


def _outputs(arch: str, width: float) -> dict:
    model = _seeded(arch, width)
    size = FIXED_SIZE if arch in FIXED_ARCHS else SIZE
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, reg = model(x)
    return {"logits": [[float(f"{v:.6g}") for v in row] for row in logits.tolist()],
            "reg": [float(f"{v:.6g}") for v in reg.tolist()], "params": sum(p.numel() for p in model.parameters())}


@pytest.fixture(scope="module")
def expected() -> dict:
    if ACCEPT:
        return {}
    assert GOLDENS.is_file(), f"{GOLDENS} is missing: FACEAGE_ACCEPT_GOLDENS=1 python -m pytest {__file__}"
    return json.loads(GOLDENS.read_text())


_ACCEPTED: dict = {}


@pytest.mark.parametrize("arch, width", NETWORKS)
def test_architecture_outputs_match_their_goldens(arch, width, expected):
    name = f"{arch}_{width:g}x"
    got = _outputs(arch, width)
    if ACCEPT:
        _ACCEPTED[name] = got
        on_disk = json.loads(GOLDENS.read_text()) if GOLDENS.is_file() else {}
        GOLDENS.write_text(json.dumps({**on_disk, **_ACCEPTED}, indent=0, sort_keys=True) + "\n")
        pytest.skip(f"accepted new goldens for {name}")
    assert name in expected, f"no golden for {name}: regenerate on purpose (see this file's docstring)"
    want = expected[name]
    assert got["params"] == want["params"], f"{name}: {got['params']} parameters, {want['params']} pinned"
    torch.testing.assert_close(torch.tensor(got["logits"]), torch.tensor(want["logits"]), rtol=1e-3, atol=1e-3,
                               msg=lambda m: f"{name} logits moved: {m}")
    torch.testing.assert_close(torch.tensor(got["reg"]), torch.tensor(want["reg"]), rtol=1e-3, atol=1e-3,
                               msg=lambda m: f"{name} regression output moved: {m}")


def test_goldens_cover_every_architecture_and_nothing_else(expected):
    if ACCEPT:
        pytest.skip("accepting")
    assert set(expected) == {f"{a}_{w:g}x" for a, w in NETWORKS}
