"""Training configuration: defaults + a YAML file + ``key=value`` overrides, every knob named.

A preset name (``cpu``, ``paper``) or a path to a YAML file selects the base.
Unknown keys are errors, so a typo cannot silently train the wrong model.
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from faceage.errors import ConfigError

DEFAULTS: dict = {
    "model": {
        "arch": "ma_sfv2", "width": 0.5, "se_reduction": 4,
        "init": None,  # start from this model file's weights (fine-tuning, a longer schedule); same network
    },
    "data": {
        "manifest": None,  # CSV (path,age[,subject][,split]); from `faceage prepare` or your own
        "datasets": None,  # or several: {name: manifest CSV}; each split on its own, scored on its own
        # sampling (docs/training.md): each dataset's share of an epoch ({name: share}; None = by size), and
        # within a dataset each age bin drawn in proportion to count ** (1 - age_balance): 0 = as the data
        # come, 1 = every age bin equally often
        "mix": None,
        "age_balance": 0.0,
        "age_bin": 5,  # years per age bin for age_balance
        "path": None,  # or a data set folder read by an importer
        "format": "utkface",  # importer for `path`
        "split_ratios": {"train": 7, "val": 2},  # used when the manifest has no split column
        "split_seed": 0,
        "input_size": 112,
        "cache_dir": None,  # default: ~/.cache/faceage
        "limit": None,  # use at most this many images (quick experiments)
    },
    "augment": {
        "flip": 0.5,  # probability of a horizontal flip
        "rotate": 0.5, "rotate_deg": 15.0,  # probability, max angle
        "scale": 0.5, "scale_range": [0.9, 1.1],
        "shift": 0.5, "shift_frac": 0.05,
        "noise": 0.3, "noise_std": 0.03,  # additive Gaussian noise, on the 0..1 scale
        "grey": 0.1,  # greyscale (old photos)
        "jitter": 0.5, "brightness": 0.2, "contrast": 0.2,
        "blur": 0.1,  # resolution loss (scans, small faces)
        "old_photo": 0.0,  # scanned-print look: sepia, faded contrast, resolution loss, grain
        "old_photo_scale": [0.2, 0.5],  # resolution kept by old_photo's resolution loss
        "jpeg": 0.0, "jpeg_quality": [15, 60],  # JPEG compression of the crop, quality range
    },
    "loss": {"reg_weight": 0.1, "label_sigma": 0.0},
    "optim": {
        "lr": 0.001, "betas": [0.9, 0.999], "weight_decay": 0.0,
        "batch_size": 128, "epochs": 80,
        "schedule": "step", "step_every": 20, "gamma": 0.2,  # or "cosine"
        "warmup_epochs": 0,
        "backbone_lr_scale": 1.0,  # fine-tuning: the backbone learns at lr x this, the age head at lr
    },
    # tta: the test-time views validation scores with (faceage.views.TTA), as predict and evaluate do
    "eval": {"estimate": "dex", "tta": "zoomflip", "batch_size": 256},
    "run": {
        "seed": 0, "device": "auto",
        "amp": True,  # GPU mixed precision: true = bf16 where supported, else fp16 + GradScaler; or "bf16"/"fp16"
        "channels_last": True,
        "compile": False,  # true (torch.compile's default mode) or a mode name from COMPILE_MODES
        "threads": None, "save_half": False,
        # GPU fast path and distributed training (docs/training.md)
        "gpu_cache": False,  # hold the decoded uint8 train images on the GPU; augment there in batches
        "prefetch": None,  # batches prepared ahead by background threads (None: up to 8 on a GPU, 0 on a CPU)
        "pin_memory": True,  # page-locked host batches + non-blocking copies (GPU, without gpu_cache)
        "sync_bn": True,  # under DDP: BatchNorm statistics over the global batch (SyncBatchNorm)
    },
}

PRESETS = ("cpu", "paper")
# "reduce-overhead" replays CUDA graphs: for small networks whose steps are bound by kernel launches
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _merge(base: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown config key {where}{key!r}; known: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} must be a mapping")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def parse_override(text: str) -> dict:
    """``optim.lr=0.01`` -> {"optim": {"lr": 0.01}} (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. optim.epochs=5)")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(source: str | Path | None = None, overrides: list[str] | dict | None = None) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if source is not None:
        text = None
        if str(source) in PRESETS:
            text = resources.files("faceage.train.presets").joinpath(f"{source}.yaml").read_text()
        elif Path(source).is_file():
            text = Path(source).read_text()
        else:
            raise ConfigError(f"config {source!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config {source}: top level must be a mapping")
        _merge(cfg, data, "")
    if isinstance(overrides, dict):
        _merge(cfg, overrides, "")
    else:
        for item in overrides or []:
            _merge(cfg, parse_override(item), "")
    if cfg["optim"]["schedule"] not in ("step", "cosine"):
        raise ConfigError(f"optim.schedule must be 'step' or 'cosine', not {cfg['optim']['schedule']!r}")
    scale = cfg["optim"]["backbone_lr_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"optim.backbone_lr_scale must be a number > 0, not {scale!r}")
    if cfg["run"]["compile"] not in (True, False, *COMPILE_MODES):
        raise ConfigError(f"run.compile must be true, false or one of {', '.join(COMPILE_MODES)}, "
                          f"not {cfg['run']['compile']!r}")
    if cfg["run"]["amp"] not in (True, False, "bf16", "fp16"):
        raise ConfigError(f"run.amp must be true, false, 'bf16' or 'fp16', not {cfg['run']['amp']!r}")
    from faceage.views import TTA

    if cfg["eval"]["tta"] not in TTA:
        raise ConfigError(f"eval.tta must be one of {', '.join(TTA)}, not {cfg['eval']['tta']!r}")
    data = cfg["data"]
    if data["datasets"] is not None and not (isinstance(data["datasets"], dict) and data["datasets"]):
        raise ConfigError(f"data.datasets must be a mapping {{name: manifest CSV}}, not {data['datasets']!r}")
    if data["mix"] is not None and not (isinstance(data["mix"], dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in data["mix"].values())
            and sum(data["mix"].values()) > 0):
        raise ConfigError(f"data.mix must be a mapping {{data set name: share >= 0}}, not {data['mix']!r}")
    ab = data["age_balance"]
    if isinstance(ab, bool) or not isinstance(ab, (int, float)) or not 0 <= ab <= 1:
        raise ConfigError(f"data.age_balance must be a number in 0..1, not {ab!r}")
    if isinstance(data["age_bin"], bool) or not isinstance(data["age_bin"], int) or data["age_bin"] < 1:
        raise ConfigError(f"data.age_bin must be a whole number of years >= 1, not {data['age_bin']!r}")
    return cfg


def dump_config(cfg: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
