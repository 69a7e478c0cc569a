"""A training campaign longer than one sitting: resume a run for a time budget, then pack it for git.

A run folder under docs/runs/ is committed with its config, curves and ONE compact checkpoint
(``campaign.pt``: weights in fp16, Adam's second moments in bf16 for their range, everything else
as is), replaced at every pack. Each sitting:

    python -m scripts.campaign run docs/runs/accurate --hours 2     # unpack, resume, stop, pack
    python -m scripts.campaign report docs/runs/accurate --against fast --write   # where the tails stand
    git add docs/runs/accurate && git commit -m "accurate campaign: epochs A-B"

``run`` restores ``last.pt`` from ``campaign.pt`` when the folder has none, resumes training
(``faceage train --resume``) and, after each epoch, stops when the next epoch would not finish
inside the budget; the last finished epoch's checkpoint is packed. A new campaign starts with
``faceage train --config CONFIG --out RUN`` stopped the same way (``run --start CONFIG``).
Rounding to half precision at a pack loses nothing training notices (about 1e-3 relative).
"""
from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PACKED = "campaign.pt"


def _convert(obj, to_half: bool, key: str = ""):
    """Float tensors to half (fp16; bf16 for Adam's exp_avg_sq, whose values underflow fp16) or back to fp32."""
    import torch

    if isinstance(obj, dict):
        return {k: _convert(v, to_half, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v, to_half, key) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.is_floating_point() and obj.numel() > 1:
        if to_half:
            return obj.to(torch.bfloat16 if key == "exp_avg_sq" else torch.float16)
        return obj.float()
    return obj


def _rewrite(src: Path, dst: Path, to_half: bool) -> Path:
    """A checkpoint's model and optimiser tensors converted (see :func:`_convert`), written atomically."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    state["model"] = _convert(state["model"], to_half)
    state["optimizer"]["state"] = _convert(state["optimizer"]["state"], to_half)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(dst)
    return dst


def pack(run: Path) -> Path:
    """RUN/last.pt -> RUN/campaign.pt (compact); returns its path."""
    return _rewrite(run / "last.pt", run / PACKED, to_half=True)


def unpack(run: Path) -> bool:
    """RUN/campaign.pt -> RUN/last.pt (fp32) when the folder has no last.pt; True if it wrote one."""
    if (run / "last.pt").exists() or not (run / PACKED).exists():
        return False
    _rewrite(run / PACKED, run / "last.pt", to_half=False)
    return True


def _epochs_done(run: Path) -> list[float]:
    """Seconds of each finished epoch, from metrics.csv."""
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [float(r["seconds"]) for r in csv.DictReader(fh)]


def run_for(run: Path, hours: float, start: str | None, overrides: list[str]) -> int:
    if unpack(run):
        print(f"restored {run / 'last.pt'} from {run / PACKED}", flush=True)
    cmd = [sys.executable, "-m", "faceage", "train", "--quiet"]
    cmd += ["--config", start, "--out", str(run)] if start else ["--resume", str(run)]
    proc = subprocess.Popen(cmd + overrides)
    began, budget = time.monotonic(), hours * 3600
    seen = len(_epochs_done(run))
    print(f"training {run} for at most {hours:g} h ({seen} epochs done before)", flush=True)
    while proc.poll() is None:
        time.sleep(10)
        times = _epochs_done(run)
        if len(times) > seen:
            seen = len(times)
            elapsed = time.monotonic() - began
            left = budget - elapsed
            print(f"epoch {seen} done ({times[-1]:.0f} s); {elapsed / 3600:.2f} h used of {hours:g}", flush=True)
            if left < 1.1 * times[-1]:  # the next epoch would not finish in time: stop at this boundary
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
        elif time.monotonic() - began > budget + 3600:  # an epoch far longer than planned: stop anyway
            proc.kill()
            break
    proc.wait()
    if (run / "last.pt").exists():
        print(f"packed {pack(run)} after epoch {len(_epochs_done(run))}", flush=True)
    return 0


BANDS = ("6-12", "13-17", "18-24", "60+")


def tails(pred: "np.ndarray", true: "np.ndarray") -> dict:
    """MAE, MAE at 13-17, bias per BANDS band, and the point-age "over 18" check set to pass at most 2% of
    13-17-year-olds: its threshold and the share of adults 25+ it passes (the issue's held-back bar)."""
    from faceage.checks.fitting import band_rows, pass_threshold
    from faceage.metrics import age_metrics

    m = age_metrics(pred, true)
    out = {"n": m["n"], "mae": m["mae"], "mae_13-17": m["mae_by_band"].get("13-17", {}).get("mae")}
    out.update({f"bias_{b}": m["mae_by_band"].get(b, {}).get("bias") for b in BANDS})
    teens, adults = band_rows(true, 13, 17), true >= 25
    if teens.any() and adults.any():
        t = pass_threshold(pred[teens], 0.02)
        out["over18_point_threshold"] = round(t, 2)
        out["adults25_passed"] = round(float((pred[adults] >= t).mean()), 4)
    return out


def report(run: Path, against: list[str], write: bool) -> int:
    """Each model on the run's validation rows, per data set and estimate (the record's and the median)."""
    import json

    from faceage import AgeEstimator
    from faceage.data.manifest import read_manifest
    from faceage.evaluate import evaluate

    if (run / "split.csv").is_file():
        samples = read_manifest(run / "split.csv").samples
    else:  # a fresh clone: git keeps the config, and the split is seeded, so it is rebuilt exactly
        from faceage.data.sets import load_samples
        from faceage.train.config import load_config

        samples = load_samples(load_config(run / "config.yaml").data)[0]
    samples = [s for s in samples if s.split == "val"]
    sets = sorted({s.dataset or "all" for s in samples})  # a run on one manifest has no data set names
    models = {run.name: str(run / "best.safetensors"), **{m: m for m in against}}
    rows = []
    for label, model in models.items():
        est = AgeEstimator(model)
        for name in sets:
            rep = evaluate(est, [s for s in samples if (s.dataset or "all") == name], prealigned=True, quiet=True)
            for how in dict.fromkeys((est.record.estimate, "median")):
                rows.append({"model": label, "data": name, "estimate": how, **tails(rep["_preds"][how], rep["_true"])})
    epochs = len(_epochs_done(run))
    head = ["model", "data", "estimate", "MAE", "MAE 13-17"] + [f"bias {b}" for b in BANDS] + \
        ["adults 25+ passed, over-18 on the point age at 2% of 13-17"]
    lines = [f"Validation rows of {run} (best epoch so far, {epochs} epochs done): "
             f"`python -m scripts.campaign report {run} {' '.join('--against ' + a for a in against)}`. "
             f"An unfinished run's weights are scored before their prior correction (it is measured once, when "
             f"training ends), the other models with theirs.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["data"], r["estimate"], f"{r['mae']:.2f}",
                 "-" if r["mae_13-17"] is None else f"{r['mae_13-17']:.2f}"]
        cells += ["-" if r[f"bias_{b}"] is None else f"{r[f'bias_{b}']:+.1f}" for b in BANDS]
        cells.append(f"{100 * r['adults25_passed']:.0f}% (at {r['over18_point_threshold']:.1f})"
                     if "adults25_passed" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if write:
        (run / "progress.md").write_text(f"# Where the campaign stands\n\n{text}\n")
        (run / "progress.json").write_text(json.dumps({"epochs": epochs, "rows": rows}, indent=2) + "\n")
        print(f"wrote {run / 'progress.md'} and progress.json")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="unpack, train for a time budget, stop at an epoch boundary, pack")
    r.add_argument("run", type=Path)
    r.add_argument("--hours", type=float, default=2.0, help="time budget of this sitting (default 2)")
    r.add_argument("--start", metavar="CONFIG", help="start a new campaign from this config instead of resuming")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (a new campaign only)")
    for name, what in (("pack", "RUN/last.pt -> RUN/campaign.pt"), ("unpack", "RUN/campaign.pt -> RUN/last.pt")):
        sub.add_parser(name, help=what).add_argument("run", type=Path)
    rep = sub.add_parser("report", help="the best epoch so far on the validation rows: MAE, the ends of life, "
                                        "the over-18 check")
    rep.add_argument("run", type=Path)
    rep.add_argument("--against", action="append", default=[], metavar="MODEL",
                     help="also score this model (a bundled name or file) on the same rows")
    rep.add_argument("--write", action="store_true", help="write RUN/progress.md and progress.json (tracked)")
    a = ap.parse_args()
    if a.cmd == "report":
        return report(a.run, a.against, a.write)
    if a.cmd == "pack":
        print(pack(a.run))
    elif a.cmd == "unpack":
        print("restored" if unpack(a.run) else "nothing to restore (last.pt exists or no campaign.pt)")
    else:
        if a.overrides and not a.start:
            ap.error("overrides are only for a new campaign (--start); a resumed run keeps its config.yaml")
        return run_for(a.run, a.hours, a.start, a.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
