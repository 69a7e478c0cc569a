"""A training campaign longer than one sitting: resume a run for a time budget, then pack it for git.

A run folder under docs/runs/ is committed with its config, curves and ONE compact checkpoint
(``campaign.pt``: weights in fp16, Adam's second moments in bf16 for their range, everything else
as is), replaced at every pack. Each sitting:

    python scripts/campaign.py run docs/runs/accurate --hours 2     # unpack, resume, stop, pack
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
    a = ap.parse_args()
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
