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


def test_tails_reads_both_ends_and_the_point_age_check(campaign):
    import numpy as np

    true = np.array([8, 10, 14, 15, 16, 17, 20, 30, 40, 50, 65, 70] * 10, dtype=float)
    pred = true + np.where(true < 18, 5.0, np.where(true >= 60, -8.0, 0.0))  # the ends shrink to the middle
    t = campaign.tails(pred, true)
    assert t["bias_13-17"] == 5.0 and t["bias_6-12"] == 5.0 and t["bias_60+"] == -8.0 and t["bias_18-24"] == 0.0
    assert t["mae_13-17"] == 5.0
    # at most 2% of 13-17 may pass: the threshold sits above the oldest-looking teenager (17 + 5 = 22)
    assert t["over18_point_threshold"] > 22 and t["adults25_passed"] == 1.0
    assert campaign.tails(pred[true >= 18], true[true >= 18])["mae_13-17"] is None  # no teenagers: no figure


def test_report_scores_the_run_and_other_models_on_its_validation_rows(campaign, tmp_path, capsys):
    from conftest import synthetic_dataset

    manifest = synthetic_dataset(tmp_path / "data", n=60, size=32, seed=2)
    run = tmp_path / "run"
    train(tiny_config(manifest, tmp_path / "cache", **{"optim.epochs": 1, "eval.tta": "none"}), run, quiet=True)
    assert campaign.report(run, [str(run / "best.safetensors")], write=True) == 0
    text = (run / "progress.md").read_text()
    assert "| run |" in text and "best.safetensors |" in text and "before their prior correction" in text
    import json

    rows = json.loads((run / "progress.json").read_text())["rows"]
    assert {r["estimate"] for r in rows} == {"dex", "median"} and all(r["n"] > 0 for r in rows)
    (run / "split.csv").unlink()  # as in a fresh clone: the seeded split is rebuilt from config.yaml
    assert campaign.report(run, [], write=True) == 0
    again = json.loads((run / "progress.json").read_text())["rows"]
    assert [r["n"] for r in again] == [r["n"] for r in rows if r["model"] == "run"]
