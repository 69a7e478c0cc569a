"""Model files: safetensors weights + a JSON record of how to rebuild and feed the network.

The record travels inside the file's metadata (key ``faceage``), so the
preprocessing used in training (input size, normalisation, crop geometry) can
never be separated from the weights. Loading never unpickles anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from faceage.errors import WeightsError

FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RUN_FILES = ("best.safetensors", "model.safetensors", "last.safetensors")


@dataclass
class ModelRecord:
    """How to rebuild the network (``model``) and prepare its input (the rest)."""

    model: dict
    input_size: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: dict | None = None  # CropSpec of the face aligner; None = images are used whole (pre-cropped)
    estimate: str = "dex"
    training: dict = field(default_factory=dict)
    # softmax temperature for the age interval, calibrated on validation data so that the 80%
    # interval holds about 80% of true ages (1.0: the distribution as the network gives it)
    interval_temperature: float = 1.0
    # added to the logits before anything is read off them: the age prior of the (balanced) training
    # sample exchanged for the data's own, with the strength chosen on validation data; None: nothing
    logit_bias: tuple[float, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "model": self.model,
                "input_size": self.input_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "crop": self.crop,
                "estimate": self.estimate,
                "training": self.training,
                "interval_temperature": self.interval_temperature,
                "logit_bias": None if self.logit_bias is None else [round(float(v), 6) for v in self.logit_bias],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "record") -> "ModelRecord":
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT_VERSION:
                raise WeightsError(f"{source}: record format {data.get('format')!r}, expected {FORMAT_VERSION}")
            return cls(
                model=dict(data["model"]),
                input_size=int(data["input_size"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                crop=data.get("crop"),
                estimate=str(data.get("estimate", "dex")),
                training=dict(data.get("training") or {}),
                interval_temperature=float(data.get("interval_temperature", 1.0)),
                logit_bias=None if data.get("logit_bias") is None else tuple(float(v) for v in data["logit_bias"]),
            )
        except WeightsError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{source}: malformed faceage record ({exc})") from exc


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or a training run folder (its best weights)."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"{path}: folder holds none of {', '.join(RUN_FILES)}")
    if not path.is_file():
        raise WeightsError(f"{path}: model file not found")
    return path


def read_record(path: str | Path) -> ModelRecord:
    """The record alone, without loading tensors (and without needing torch)."""
    from safetensors import safe_open

    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise WeightsError(f"{path}: not a safetensors model file ({exc})") from exc
    if "faceage" not in meta:
        raise WeightsError(f"{path}: safetensors file without a faceage record; was it written by faceage?")
    return ModelRecord.from_json(meta["faceage"], source=str(path))


def save_model(model, record: ModelRecord, path: str | Path, half: bool = False) -> Path:
    """Write weights (optionally stored as float16) and record atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if half and v.is_floating_point() else v
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"faceage": record.to_json()})
    tmp.replace(path)
    return path


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, record). Errors name the file and the mismatch."""
    from safetensors.torch import load_file

    from faceage.nets.model import AgeNet, ModelSpec

    path = resolve_model_path(path)
    record = read_record(path)
    try:
        spec = ModelSpec(**record.model)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: record describes an unknown model ({exc})") from exc
    model = AgeNet(spec)
    state = load_file(str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise WeightsError(f"{path}: weights do not match {spec.name}: {' '.join(first)}") from exc
    model.to(device).eval()
    return model, record
