"""Training configuration: one declaration per key, frozen dataclasses per section.

Each key is declared once in :data:`KEYS` (default, check, help). From that declaration come
the typed sections (``cfg.optim.lr``: frozen dataclasses built by :func:`_section_class`), the
checks at load (an unknown key is an error with the nearest known one; a bad value names
the key and the allowed range), and the key list of ``faceage train --help``.

A preset name (``cpu``, ``paper``) or a path to a YAML file selects the base, ``KEY=VALUE``
overrides (values read as YAML) go on top: :func:`load_config`. A config is never changed in
place: :meth:`Config.override` returns a new, checked one.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from faceage.core.ages import ESTIMATES
from faceage.errors import ConfigError
from faceage.nets.spec import ARCHS, SE_REDUCTIONS, WIDTHS
from faceage.core.options import number_problem, unknown_key
from faceage.core.views import TTA

PRESETS = ("cpu", "paper")
# "reduce-overhead" replays CUDA graphs: for small networks whose steps are bound by kernel launches
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# -- value checks: every key's type and range, checked at load, before any work ---------------------
def _number(lo: float | None = None, hi: float | None = None, *, integer: bool = False, above: bool = False,
            optional: bool = False):
    """A number (an int where ``integer``) in [lo, hi] (or > lo where ``above``); None allowed if ``optional``."""
    def check(v):
        if v is None and optional:
            return None
        problem = number_problem(v, integer=integer, lo=lo, hi=hi, above=above)
        return problem and problem + (" or null" if optional and "number" in problem else "")
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


@dataclass(frozen=True)
class Key:
    """One config key: its default, its check (None or what is wrong) and what it does."""

    default: Any
    check: Callable[[Any], str | None]
    help: str


#: every key of every section, declared once
KEYS: dict[str, dict[str, Key]] = {
    "model": {
        "arch": Key("ma_sfv2", _choice(*ARCHS), "network: ma_sfv2 (with mixed attention), sfv2, or face_resnet (dlib's "
                                                   "face-recognition ResNet; model.init=dlib-face-resnet)"),
        "width": Key(None, _choice(*WIDTHS, optional=True), "ShuffleNetV2 width multiplier (stage channels in "
                                                             "faceage.nets.spec); null: 0.5, and 1.0 (its only "
                                                             "shape) for face_resnet"),
        "se_reduction": Key(4, _number(*SE_REDUCTIONS, integer=True), "channel reduction in the SE attention"),
        "init": Key(None, _text(), "start from this model's weights (a bundled name, file or run folder: "
                                   "fine-tuning, a longer schedule; same network), or dlib-face-resnet / a dlib "
                                   ".dat file: dlib's pretrained face network for arch face_resnet"),
    },
    "data": {
        "manifest": Key(None, _text(), "CSV (path,age[,subject][,split]); from `faceage prepare` or your own"),
        "datasets": Key(None, _mapping(_text(optional=False)),
                        "or several: {name: manifest CSV}; each split on its own, scored on its own"),
        "mix": Key(None, _mapping(_number(0)), "each dataset's share of an epoch ({name: share}; null = by size)"),
        "age_balance": Key(0.0, PROB, "within a dataset each age bin is drawn in proportion to count ** (1 - "
                                      "age_balance): 0 = as the data come, 1 = every age bin equally often"),
        "age_bin": Key(5, _number(1, 100, integer=True), "years per age bin for age_balance"),
        "path": Key(None, _text(), "or a data set folder read by an importer"),
        "format": Key("utkface", _text(False), "importer for data.path"),
        "split_ratios": Key({"train": 7, "val": 2}, _mapping(_number(0), optional=False),
                            "used when the manifest has no split column"),
        "split_seed": Key(0, _number(0, integer=True), "seed of the split"),
        "input_size": Key(112, _number(16, 1024, integer=True), "network input, pixels"),
        "cache_dir": Key(None, _text(), "decoded-image cache (default: ~/.cache/faceage)"),
        "limit": Key(None, _number(1, integer=True, optional=True), "use at most this many images (quick "
                                                                    "experiments)"),
    },
    "augment": {
        "flip": Key(0.5, PROB, "probability of a horizontal flip"),
        "rotate": Key(0.5, PROB, "probability of a rotation"),
        "rotate_deg": Key(15.0, _number(0, 180), "largest rotation, degrees"),
        "scale": Key(0.5, PROB, "probability of a scaling"),
        "scale_range": Key([0.9, 1.1], _pair(0.1, 10), "scaling range [low, high]"),
        "shift": Key(0.5, PROB, "probability of a shift"),
        "shift_frac": Key(0.05, _number(0, 0.5), "largest shift, fraction of the side"),
        "noise": Key(0.3, PROB, "probability of additive Gaussian noise"),
        "noise_std": Key(0.03, _number(0, 1), "its standard deviation, on the 0..1 scale"),
        "grey": Key(0.1, PROB, "probability of greyscale (old photos)"),
        "jitter": Key(0.5, PROB, "probability of brightness/contrast jitter"),
        "brightness": Key(0.2, _number(0, 1), "largest brightness change"),
        "contrast": Key(0.2, _number(0, 1), "largest contrast change"),
        "blur": Key(0.1, PROB, "probability of resolution loss (scans, small faces)"),
        "old_photo": Key(0.0, PROB, "probability of a scanned-print look: sepia, faded contrast, resolution "
                                    "loss, grain"),
        "old_photo_scale": Key([0.2, 0.5], _pair(0.05, 1), "resolution kept by old_photo's resolution loss"),
        "jpeg": Key(0.0, PROB, "probability of JPEG compression of the crop"),
        "jpeg_quality": Key([15, 60], _pair(1, 100, integer=True), "its quality range [low, high]"),
    },
    "loss": {  # faceage.train.loss.age_loss takes this section key for key
        "reg_weight": Key(0.1, _number(0), "weight of the regression term |reg - age|"),
        "label_sigma": Key(0.0, _number(0, 50), "Gaussian label spread, years (0: one-hot)"),
        "label_sigma_slope": Key(0.0, _number(0, 1), "spread growing with age: label_sigma + slope * age"),
        "mean_weight": Key(0.0, _number(0, 10), "mean-variance loss: weight of the expectation's squared error"),
        "var_weight": Key(0.0, _number(0, 10), "mean-variance loss: weight of the distribution's variance"),
    },
    "distill": {  # faceage.train.distill
        "teacher": Key(None, _text(), "distil from this model (a bundled name, file or run folder): its age "
                                      "distributions on the training crops are soft targets"),
        "crops": Key(None, _mapping(_text(optional=False)),
                     "the teacher's own crops of the training photos: manifests {name: path} of the same photos "
                     "prepared as the teacher was trained, matched to the training rows by source photo; needed when "
                     "the teacher reads other crops or another size than this run"),
        "weight": Key(0.5, PROB, "share of the loss given to matching the teacher; the rest is the loss section's"),
        "temperature": Key(1.0, _number(0, 20, above=True), "softmax temperature of both distributions when "
                                                            "matched"),
    },
    "optim": {
        "lr": Key(0.001, _number(0, 10, above=True), "learning rate (Adam)"),
        "betas": Key([0.9, 0.999], _pair(0, 0.99999), "Adam betas"),
        "weight_decay": Key(0.0, _number(0), "weight decay"),
        "batch_size": Key(128, _number(1, integer=True), "global batch (all processes together)"),
        "epochs": Key(80, _number(1, integer=True), "epochs"),
        "schedule": Key("step", _choice("step", "cosine"), "learning-rate schedule"),
        "step_every": Key(20, _number(1, integer=True), "step schedule: epochs between decays"),
        "gamma": Key(0.2, _number(0, 1, above=True), "step schedule: decay factor"),
        "warmup_epochs": Key(0, _number(0, integer=True), "linear warm-up epochs"),
        "head_only_epochs": Key(0, _number(0, integer=True), "fine-tuning: the first N epochs train the age head "
                                                             "alone (the backbone frozen), so a fresh head does not "
                                                             "send large gradients into pretrained layers"),
        "backbone_lr_scale": Key(1.0, _number(0, above=True), "fine-tuning: the backbone learns at lr x this, "
                                                              "the age head at lr"),
    },
    "eval": {
        "estimate": Key("dex", _choice(*ESTIMATES), "how an age is read off the outputs: dex (expectation), reg, "
                                                    "mean (of the two) or median (of the distribution)"),
        "tta": Key("zoomflip", _choice(*TTA), "test-time views validation scores with, as predict does"),
        "batch_size": Key(256, _number(1, integer=True), "validation batch"),
        "prior_select": Key("mae", _choice("mae", "balanced_mae"),
                            "after weighted sampling, how much of the data's age prior is put back: the strength "
                            "with the lowest validation MAE, or the lowest age-balanced MAE (the mean of the MAE "
                            "per 5-year bin: both ends of life weigh as much as the crowded middle)"),
    },
    "run": {
        "seed": Key(0, _number(0, integer=True), "random seed"),
        "device": Key("auto", _text(False), "auto, cpu, cuda or cuda:N"),
        "amp": Key(True, _choice(True, False, "bf16", "fp16"), "GPU mixed precision: true = bf16 where "
                                                               "supported, else fp16 + GradScaler"),
        "channels_last": Key(True, _choice(True, False), "channels-last memory format"),
        "compile": Key(False, _choice(True, False, *COMPILE_MODES), "torch.compile (true: its default mode)"),
        "threads": Key(None, _number(1, 256, integer=True, optional=True), "CPU threads (null: PyTorch's choice)"),
        "save_half": Key(False, _choice(True, False), "store weights as float16"),
        "gpu_cache": Key(False, _choice(True, False), "hold the decoded uint8 train images on the GPU; augment "
                                                      "there in batches"),
        "prefetch": Key(None, _number(0, 64, integer=True, optional=True), "batches prepared ahead by background "
                                                                           "threads (null: up to 8 on a GPU, 0 on a CPU)"),
        "pin_memory": Key(True, _choice(True, False), "page-locked host batches + non-blocking copies (GPU, "
                                                      "without gpu_cache)"),
        "sync_bn": Key(True, _choice(True, False), "under DDP: BatchNorm statistics over the global batch"),
    },
}


class Section:
    """Base of the generated section classes: attribute access, and the plain form for YAML and reports."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _section_class(name: str, keys: dict[str, Key]) -> type:
    def field(key: Key):
        if isinstance(key.default, list):
            return dataclasses.field(default_factory=lambda d=key.default: tuple(d), metadata={"help": key.help})
        if isinstance(key.default, dict):
            return dataclasses.field(default_factory=lambda d=key.default: dict(d), metadata={"help": key.help})
        return dataclasses.field(default=key.default, metadata={"help": key.help})

    cls = dataclasses.make_dataclass(f"{name.capitalize()}Config", [(k, Any, field(key)) for k, key in keys.items()],
                                     bases=(Section,), frozen=True,
                                     namespace={"__doc__": f"The ``{name}`` section of the training config."})
    cls.__module__ = __name__  # found by pickle as this module's attribute of that name (below): spawned workers
    return cls


SECTIONS: dict[str, type] = {name: _section_class(name, keys) for name, keys in KEYS.items()}
ModelConfig, DataConfig, AugmentConfig, LossConfig, DistillConfig, OptimConfig, EvalConfig, RunConfig = SECTIONS.values()


@dataclass(frozen=True)
class Config:
    """A checked training config: ``cfg.optim.lr``. Build it with :func:`load_config` or :meth:`override`."""

    model: ModelConfig
    data: DataConfig
    augment: AugmentConfig
    loss: LossConfig
    distill: DistillConfig
    optim: OptimConfig
    eval: EvalConfig
    run: RunConfig

    def to_dict(self) -> dict:
        """The nested plain form (config.yaml, experiment state files)."""
        return {name: getattr(self, name).to_dict() for name in KEYS}

    def override(self, update: dict) -> "Config":
        """A new config with ``update`` ({section: {key: value}}) on top, checked like a loaded one."""
        return from_dict(_merged(self.to_dict(), update))


def defaults() -> dict:
    """Every key's default, as the nested plain form."""
    return {section: {k: _plain(key.default) for k, key in keys.items()} for section, keys in KEYS.items()}


def _merged(base: dict, update: dict, where: str = "") -> dict:
    """``base`` (the nested plain form) with ``update`` on top; unknown keys are errors with a did-you-mean."""
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise unknown_key(f"{where}{key}", [f"{where}{k}" for k in base], "config key")
        if not where:  # a section
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key} must be a mapping of its keys ({', '.join(KEYS[key])})")
            out[key] = _merged(base[key], value, f"{key}.")
        elif isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = {**base[key], **value}  # a mapping (data.split_ratios, data.datasets): entries merge
        else:
            out[key] = value  # null switches an optional mapping off; check_config says if not allowed
    return out


def from_dict(data: dict) -> Config:
    """A :class:`Config` from the nested plain form (every section and key present), checked."""
    check_config(data)
    sections = {}
    for name, cls in SECTIONS.items():
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data[name].items()}
        sections[name] = cls(**values)
    return Config(**sections)


def parse_override(text: str) -> dict:
    """``optim.lr=0.01`` -> {"optim": {"lr": 0.01}} (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. optim.epochs=5)")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(source: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults, then a preset or YAML file, then overrides (``KEY=VALUE`` texts or a nested mapping)."""
    cfg = defaults()
    if source is not None:
        if str(source) in PRESETS:
            text = resources.files("faceage.train.presets").joinpath(f"{source}.yaml").read_text()
        elif Path(source).is_file():
            try:
                text = Path(source).read_text()
            except UnicodeDecodeError:
                raise ConfigError(f"config {source}: not a text file; fix or replace it") from None
        else:
            raise ConfigError(f"config {source!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {source}: not valid YAML ({' '.join(str(exc).split())[:200]}); fix or "
                              "replace the file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {source}: top level must be a mapping")
        cfg = _merged(cfg, data)
    if isinstance(overrides, dict):
        cfg = _merged(cfg, overrides)
    else:
        for item in overrides or []:
            cfg = _merged(cfg, parse_override(item))
    return from_dict(cfg)


def check_config(cfg: dict) -> None:
    """Every value of the nested plain form against its declaration; the first bad one raises ConfigError
    naming the key."""
    for section, keys in KEYS.items():
        for key, decl in keys.items():
            problem = decl.check(cfg[section][key])
            if problem:
                raise ConfigError(f"config {section}.{key} = {cfg[section][key]!r}: {problem}")
    given = [k for k in ("datasets", "manifest", "path") if cfg["data"][k]]
    if len(given) > 1:
        raise ConfigError(f"config sets {', '.join(f'data.{k}' for k in given)}: set one of data.datasets, "
                          "data.manifest and data.path (the others would be ignored)")
    if cfg["optim"]["warmup_epochs"] >= cfg["optim"]["epochs"] > 1:
        raise ConfigError(f"config optim.warmup_epochs = {cfg['optim']['warmup_epochs']}: must be below "
                          f"optim.epochs ({cfg['optim']['epochs']})")


def keys_help() -> str:
    """Every key with its default and what it does (``faceage train --help``)."""
    def shown(value) -> str:
        return value if isinstance(value, str) else json.dumps(_plain(value))

    lines = []
    for section, keys in KEYS.items():
        lines += [f"  {section}.{k} = {shown(key.default)}: {key.help}" for k, key in keys.items()]
    return "\n".join(lines)


def dump_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
