"""scripts/campaign.py: a run packed for git, restored and resumed, ends like one that never stopped."""
import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from faceage.train.loop import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "campaign.py"


@pytest.fixture(scope="module")
def campaign():
    spec = importlib.util.spec_from_file_location("campaign", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_is_compact_and_restores_a_resumable_run(campaign, tiny_manifest, tmp_path):
    cfg = tiny_config(tiny_manifest, tmp_path / "cache")
    train(cfg, tmp_path / "full", quiet=True)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # a sitting that ends in epoch 2
        train(cfg, run, quiet=True, stop_at_step=5)
    before = torch.load(run / "last.pt", weights_only=True)
    packed = campaign.pack(run)
    assert packed.stat().st_size < 0.6 * (run / "last.pt").stat().st_size
    state = torch.load(packed, weights_only=True)
    moments = [s for s in state["optimizer"]["state"].values() if s["exp_avg_sq"].numel() > 1]
    assert moments and all(s["exp_avg_sq"].dtype == torch.bfloat16 for s in moments)

    for name in ("last.pt", "last.prev.pt"):  # a fresh clone has only what git holds
        (run / name).unlink(missing_ok=True)
    assert campaign.unpack(run) and not campaign.unpack(run)  # the second call finds last.pt and leaves it
    after = torch.load(run / "last.pt", weights_only=True)
    for k, v in before["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(after["model"][k], v, rtol=2e-3, atol=1e-3, msg=k)
            assert after["model"][k].dtype == torch.float32
    assert after["epoch"] == 1 and after["history"] == before["history"]

    train(cfg, run, resume=True, quiet=True)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(run / "last.safetensors")
    for k in a:  # half-precision rounding once, then the same data order: close, not bit-equal
        if a[k].is_floating_point() and "running" not in k:
            torch.testing.assert_close(b[k], a[k], rtol=0.05, atol=0.02, msg=k)
