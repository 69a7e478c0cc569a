"""Training configuration: defaults + a YAML file + ``key=value`` overrides, every knob named.

A preset name (``cpu``, ``paper``) or a path to a YAML file selects the base.
Unknown keys are errors, so a typo cannot silently train the wrong model.
"""
from __future__ import annotations

import copy
import difflib
import math
from importlib import resources
from pathlib import Path

import yaml

from faceage.errors import ConfigError
from faceage.views import TTA

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
    # label_sigma(_slope): Gaussian label spread of label_sigma + slope * age years (0: one-hot);
    # mean_weight/var_weight: mean-variance loss on the age distribution (faceage.train.loss)
    "loss": {"reg_weight": 0.1, "label_sigma": 0.0, "label_sigma_slope": 0.0, "mean_weight": 0.0, "var_weight": 0.0},
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
            near = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f"did you mean {where}{near[0]}? " if near else ""
            raise ConfigError(f"unknown config key {where}{key!r}; {hint}known: {sorted(base)}")
        if isinstance(base[key], dict) and value is None:
            base[key] = None  # an optional mapping switched off (data.mix=null); check_config says if not allowed
        elif isinstance(base[key], dict):
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
    check_config(cfg)
    return cfg


# -- value checks: every key's type and range, checked at load, before any work ---------------------


def _number(lo: float | None = None, hi: float | None = None, *, integer: bool = False, above: bool = False,
            optional: bool = False):
    """A number (an int where ``integer``) in [lo, hi] (or > lo where ``above``); None allowed if ``optional``."""
    def check(v):
        if v is None and optional:
            return None
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not math.isfinite(v):
            return f"must be {'a whole number' if integer else 'a number'}{' or null' if optional else ''}"
        if lo is not None and (v <= lo if above else v < lo) or hi is not None and v > hi:
            lo_s = f"> {lo:g}" if above else f">= {lo:g}" if lo is not None else ""
            return f"must be {lo_s}{' and ' if lo_s and hi is not None else ''}{f'<= {hi:g}' if hi is not None else ''}"
        return None
    return check


def _choice(*options, optional: bool = False):
    def check(v):
        if (v is None and optional) or v in options:
            return None
        near = difflib.get_close_matches(str(v), [str(o) for o in options], n=1)
        return f"must be one of {', '.join(map(str, options))}" + (f" (did you mean {near[0]}?)" if near else "")
    return check


def _pair(lo: float, hi: float, integer: bool = False):
    one = _number(lo, hi, integer=integer)

    def check(v):
        if not isinstance(v, (list, tuple)) or len(v) != 2 or any(one(x) for x in v) or v[0] > v[1]:
            return f"must be a pair [low, high] with {lo:g} <= low <= high <= {hi:g}"
        return None
    return check


def _text(optional: bool = True):
    def check(v):
        return None if (v is None and optional) or isinstance(v, str) and v else "must be a path or name (text)"
    return check


def _mapping(values, optional: bool = True):
    def check(v):
        if v is None:
            return None if optional else "must be a mapping {name: value}"
        if not isinstance(v, dict) or not v:
            return "must be a non-empty mapping {name: value} or null"
        bad = [k for k, x in v.items() if values(x)]
        return f"has bad values for {bad}: each {values(v[bad[0]])}" if bad else None
    return check


PROB = _number(0, 1)
SCHEMA = {
    "model": {"arch": _choice("sfv2", "ma_sfv2"), "width": _choice(0.5, 1.0, 1.5, 2.0),
              "se_reduction": _number(1, 64, integer=True), "init": _text()},
    "data": {"manifest": _text(), "datasets": _mapping(_text(optional=False)), "mix": _mapping(_number(0)),
             "age_balance": PROB, "age_bin": _number(1, 100, integer=True), "path": _text(), "format": _text(False),
             "split_ratios": _mapping(_number(0), optional=False), "split_seed": _number(0, integer=True),
             "input_size": _number(16, 1024, integer=True), "cache_dir": _text(),
             "limit": _number(1, integer=True, optional=True)},
    "augment": {"flip": PROB, "rotate": PROB, "rotate_deg": _number(0, 180), "scale": PROB,
                "scale_range": _pair(0.1, 10), "shift": PROB, "shift_frac": _number(0, 0.5), "noise": PROB,
                "noise_std": _number(0, 1), "grey": PROB, "jitter": PROB, "brightness": _number(0, 1),
                "contrast": _number(0, 1), "blur": PROB, "old_photo": PROB, "old_photo_scale": _pair(0.05, 1),
                "jpeg": PROB, "jpeg_quality": _pair(1, 100, integer=True)},
    "loss": {"reg_weight": _number(0), "label_sigma": _number(0, 50), "label_sigma_slope": _number(0, 1),
             "mean_weight": _number(0, 10), "var_weight": _number(0, 10)},
    "optim": {"lr": _number(0, 10, above=True), "betas": _pair(0, 0.99999), "weight_decay": _number(0),
              "batch_size": _number(1, integer=True), "epochs": _number(1, integer=True),
              "schedule": _choice("step", "cosine"), "step_every": _number(1, integer=True),
              "gamma": _number(0, 1, above=True), "warmup_epochs": _number(0, integer=True),
              "backbone_lr_scale": _number(0, above=True)},
    "eval": {"estimate": _choice("dex", "reg", "mean"), "tta": _choice(*TTA), "batch_size": _number(1, integer=True)},
    "run": {"seed": _number(0, integer=True), "device": _text(False), "amp": _choice(True, False, "bf16", "fp16"),
            "channels_last": _choice(True, False), "compile": _choice(True, False, *COMPILE_MODES),
            "threads": _number(1, 256, integer=True, optional=True), "save_half": _choice(True, False),
            "gpu_cache": _choice(True, False), "prefetch": _number(0, 64, integer=True, optional=True),
            "pin_memory": _choice(True, False), "sync_bn": _choice(True, False)},
}


def check_config(cfg: dict) -> None:
    """Every value against :data:`SCHEMA`; the first bad one raises ConfigError naming the key."""
    for section, checks in SCHEMA.items():
        for key, check in checks.items():
            problem = check(cfg[section][key])
            if problem:
                raise ConfigError(f"config {section}.{key} = {cfg[section][key]!r}: {problem}")
    if cfg["data"]["datasets"] and (cfg["data"]["manifest"] or cfg["data"]["path"]):
        raise ConfigError("set data.datasets or data.manifest/data.path, not both")
    if cfg["optim"]["warmup_epochs"] >= cfg["optim"]["epochs"] > 1:
        raise ConfigError(f"config optim.warmup_epochs = {cfg['optim']['warmup_epochs']}: must be below "
                          f"optim.epochs ({cfg['optim']['epochs']})")


def dump_config(cfg: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
