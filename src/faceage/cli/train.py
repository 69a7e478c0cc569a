"""faceage train: train an age model from a YAML config (or preset) with key=value overrides."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from faceage.train.config import keys_help  # light: no torch

HELP = "train an age model from a YAML config (or a preset: cpu, paper)"
_EXAMPLES = """examples:
  faceage prepare utkface ../shared/data/utkface data/utkface-112
  faceage train --config cpu data.manifest=data/utkface-112/manifest.csv --out runs/cpu
  faceage train --config paper data.manifest=data/morph2/manifest.csv run.compile=true
  faceage train --resume runs/cpu            # continue a stopped run where it left off
  faceage train --resume runs/cpu --restart  # the same, or from scratch if it has no usable checkpoint

Every config key can be overridden as SECTION.KEY=VALUE (values are YAML):
  optim.epochs=30 optim.lr=0.002 model.width=1.0 loss.reg_weight=0 augment.flip=0
The config used is saved as RUN/config.yaml; each epoch appends to RUN/metrics.csv,
redraws RUN/curves.png and writes an atomic checkpoint RUN/last.pt (the one before is kept as
RUN/last.prev.pt). --resume checks what it loads (shapes, types, finite values, random states,
config.yaml); a bad last.pt falls back to last.prev.pt with a warning, and a folder without a
usable checkpoint is refused unless --restart. An epoch whose loss or weights are NaN stops the
run without saving anything of it.

config keys (default: what it does):
"""

EPILOG = _EXAMPLES + keys_help()  # the key list comes from the config's one declaration (train.config.KEYS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.epochs=5")
    p.add_argument("--config", "-c", default=None, help="preset name (cpu, paper) or YAML file")
    p.add_argument("--out", "-o", default=None, help="run folder (default runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--restart", action="store_true",
                   help="with --resume: train RUN_DIR again from scratch when it has no usable checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from faceage.extras import require

    require("train", "faceage train", ("torch", "matplotlib"))
    from faceage.errors import ConfigError
    from faceage.train.config import load_config
    from faceage.train.loop import train

    if args.restart and not args.resume:
        raise ConfigError("--restart goes with --resume RUN_DIR")
    if args.resume:
        from faceage.train.checkpoint import Checkpoints

        run_dir = Path(args.resume)
        Checkpoints.resumable(run_dir, args.restart)  # refused before any data is loaded
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"cannot resume {run_dir}: its config.yaml is missing; train into a new folder "
                              "with --config")
        cfg = load_config(run_dir / "config.yaml", args.overrides)
        train(cfg, run_dir, resume=True, quiet=args.quiet, restart=args.restart)
        return 0
    cfg = load_config(args.config, args.overrides)
    name = Path(str(args.config or "default")).stem
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    train(cfg, out, quiet=args.quiet)
    return 0
