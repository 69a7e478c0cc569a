"""Reading model files: safetensors weights (or an ONNX graph) + a JSON record of how to rebuild and feed the
network. Writing them is :mod:`faceage.models.write`'s (and :mod:`faceage.export`'s for ONNX).

The record travels inside the file's metadata (key ``faceage``; ONNX files carry the
same JSON in their ``metadata_props``), so the preprocessing used in training (input
size, normalisation, crop geometry) can never be separated from the weights. This
module is the only one that makes or parses that JSON (:class:`ModelRecord`), and it checks every field's
type and range when a file is loaded, and every derived number against what it derives from
(an age-check policy's stored threshold against its calibration): a bad record is one
:class:`WeightsError` naming the file and the field, at load, never a wrong answer. Digests of
the record and the weights are checked at load (:mod:`faceage.models.digest`). Nothing is unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceage.core.ages import ESTIMATES
from faceage.models.digest import RECORD_KEY, check_pinned, onnx_digest, onnx_metadata, tensors_digest, verify
from faceage.errors import WeightsError
from faceage.face.align import CropSpec
from faceage.nets.spec import ModelSpec
from faceage.core.options import number_problem

if TYPE_CHECKING:
    from faceage.checks.policy import AgeCheckPolicy

FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RUN_FILES = ("best.safetensors", "model.safetensors", "last.safetensors")
INPUT_SIZES = (16, 1024)
#: the range a calibrated interval temperature may take (a model's own is about 1-2; 0.001 gives an
#: "80% interval" of one year around a wrong age)
TEMPERATURES = (0.2, 5.0)
#: the largest prior correction a record may add to one logit (faceage's own stay under 1)
MAX_LOGIT_BIAS = 10.0
#: the resize filters faceage.core.preprocess knows (Pillow's names)
RESIZE_FILTERS = ("bilinear",)


class _Invalid(ValueError):
    """One bad field; :meth:`ModelRecord.from_json` adds the file name."""


def _number(value: Any, name: str, kind: type = float, lo: float | None = None, hi: float | None = None):
    """``value`` as ``kind`` (int or float), checked by :func:`faceage.core.options.number_problem`."""
    problem = number_problem(value, integer=kind is int, lo=lo, hi=hi, integral_float=True)
    if problem:
        raise _Invalid(f"{name} {problem}, not {json.dumps(value)[:40]}")
    return kind(value)


def _triple(value: Any, name: str, lo: float, hi: float) -> tuple[float, float, float]:
    """Three numbers (R, G, B) within lo..hi (pixels are 0..1 when mean and std apply)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _Invalid(f"{name} must be a list of 3 numbers (R, G, B), not {json.dumps(value)[:40]}")
    return tuple(_number(v, f"{name}[{i}]", float, lo, hi) for i, v in enumerate(value))


def _architecture(value: Any) -> ModelSpec:
    if not isinstance(value, dict):
        raise _Invalid(f"model must be an object (arch, width, se_reduction, num_classes), not {json.dumps(value)[:40]}")
    try:
        return ModelSpec.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"model: {exc}") from None


def _crop(value: Any) -> CropSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid(f"crop must be an object (CropSpec) or null, not {json.dumps(value)[:40]}")
    for k, v in value.items():
        if k in ("size", "eye_distance", "eye_y", "margin"):
            _number(v, f"crop.{k}", int if k == "size" else float)
    try:
        return CropSpec.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"crop: {exc}") from None


@dataclass(frozen=True)
class Scoring:
    """The inference settings a model's interval temperature, prior correction and reported numbers
    were measured under: the test-time views (:mod:`faceage.core.views`) and the resize filter of
    :mod:`faceage.core.preprocess`. Records written before these were stored read as today's defaults."""

    tta: str = "zoomflip"
    resize: str = "bilinear"

    def to_dict(self) -> dict:
        return {"tta": self.tta, "resize": self.resize}


def _scoring(value: Any) -> Scoring:
    from faceage.core.views import TTA

    if value is None:
        return Scoring()
    if not isinstance(value, dict) or set(value) - {"tta", "resize"}:
        raise _Invalid(f"scoring must be an object with tta and resize, not {json.dumps(value)[:60]}")
    cal = Scoring(**value)
    if cal.tta not in TTA:
        raise _Invalid(f"scoring.tta must be one of {', '.join(TTA)}, not {json.dumps(cal.tta)[:40]}")
    if cal.resize not in RESIZE_FILTERS:
        raise _Invalid(f"scoring.resize must be one of {', '.join(RESIZE_FILTERS)}, not "
                       f"{json.dumps(cal.resize)[:40]}")
    return cal


@dataclass
class ModelRecord:
    """How to rebuild the network (``model``) and prepare its input (the rest), typed. Build it with
    checked values: :meth:`from_json` checks every field.

    A field added later is read with a default from records written before it, so every record
    written by an earlier faceage keeps loading (``format`` changes only when that cannot hold)."""

    model: ModelSpec
    input_size: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: CropSpec | None = None  # the face aligner's geometry; None = images are used whole (pre-cropped)
    estimate: str = "dex"
    training: dict = field(default_factory=dict)  # provenance: what the training run reported (free-form)
    # softmax temperature for the age interval, calibrated on validation data so that the 80%
    # interval holds about 80% of true ages (1.0: the distribution as the network gives it)
    interval_temperature: float = 1.0
    # added to the logits before anything is read off them: the age prior of the (balanced) training
    # sample exchanged for the data's own, with the strength chosen on validation data; None: nothing
    logit_bias: tuple[float, ...] | None = None
    scoring: Scoring = field(default_factory=Scoring)
    # age-check policies by threshold ("over 18": calibration of p_over + pass threshold, with the validation
    # figures behind them; faceage.checks.policy); records written before them load with none
    age_checks: dict[int, "AgeCheckPolicy"] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def warnings(self) -> list[str]:
        """What is valid but extreme in this record (``faceage models --info`` lists it)."""
        out = []
        if not 0.5 <= self.interval_temperature <= 3:
            out.append(f"interval_temperature {self.interval_temperature:g}: intervals much "
                       f"{'narrower' if self.interval_temperature < 1 else 'wider'} than the network's own")
        if self.logit_bias is not None and max(map(abs, self.logit_bias)) > 3:
            out.append(f"logit_bias reaches {max(self.logit_bias, key=abs):g}: a strong prior correction")
        for policy in self.age_checks.values():
            out.extend(policy.warnings())
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "model": self.model.to_dict(),
                "input_size": self.input_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "crop": None if self.crop is None else self.crop.to_dict(),
                "estimate": self.estimate,
                "training": self.training,
                "interval_temperature": self.interval_temperature,
                "logit_bias": None if self.logit_bias is None else [round(float(v), 6) for v in self.logit_bias],
                "scoring": self.scoring.to_dict(),
                **({"age_checks": {str(k): p.to_dict() for k, p in self.age_checks.items()}} if self.age_checks
                   else {}),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "record") -> "ModelRecord":
        """Parse and check a record; any problem is a :class:`WeightsError` naming ``source``."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{source}: the faceage record is not JSON ({exc}); re-export the model") from None
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: the faceage record is a JSON {type(data).__name__}, not an object; "
                               "the file is damaged or was not written by faceage")
        if data.get("format") != FORMAT_VERSION:
            raise WeightsError(f"{source}: record format {data.get('format')!r}, expected {FORMAT_VERSION}; "
                               "use the faceage version that wrote it")
        try:
            if "model" not in data or "input_size" not in data:
                raise _Invalid("model and input_size are required")
            estimate = data.get("estimate", "dex")
            if estimate not in ESTIMATES:
                raise _Invalid(f"estimate must be one of {', '.join(ESTIMATES)}, not {json.dumps(estimate)[:40]}")
            training = data.get("training") or {}
            if not isinstance(training, dict):
                raise _Invalid("training must be an object")
            model = _architecture(data["model"])
            return cls(
                model=model,
                input_size=_number(data["input_size"], "input_size", int, *INPUT_SIZES),
                mean=_triple(data.get("mean", IMAGENET_MEAN), "mean", 0.0, 1.0),
                std=_triple(data.get("std", IMAGENET_STD), "std", 0.01, 10.0),
                crop=_crop(data.get("crop")),
                estimate=estimate,
                training=training,
                interval_temperature=_number(data.get("interval_temperature", 1.0), "interval_temperature",
                                             float, *TEMPERATURES),
                logit_bias=_bias(data.get("logit_bias"), model.num_classes),
                scoring=_scoring(data.get("scoring")),
                age_checks=_age_checks(data.get("age_checks"), model),
            )
        except _Invalid as exc:
            raise WeightsError(f"{source}: bad faceage record: {exc}; re-export or retrain the model") from None


def _age_checks(value, model: ModelSpec) -> dict:
    from faceage.checks.policy import check_policies

    try:
        return check_policies(value, model.num_classes)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _bias(value, n: int) -> tuple[float, ...] | None:
    """``logit_bias``: null, or one finite number per age class."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n or any(number_problem(v) for v in value):
        raise _Invalid(f"logit_bias must be null or a list of {n} finite numbers")
    if max(map(abs, value)) > MAX_LOGIT_BIAS:
        raise _Invalid(f"logit_bias must stay within +-{MAX_LOGIT_BIAS:g} (a prior correction), not "
                       f"{max(value, key=abs):g}")
    return tuple(float(v) for v in value)


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
    """The record alone, its digests checked, without loading the network (no torch, no ONNX Runtime session):
    from a safetensors file's header or an ONNX file's metadata."""
    path = resolve_model_path(path)
    if path.suffix == ".onnx":
        data = path.read_bytes()
        try:
            meta = onnx_metadata(data)
        except ValueError as exc:
            raise WeightsError(f"{path}: not an ONNX model file ({exc})") from None
        return onnx_record(path, data, meta)
    return _record(path, read_metadata(path))


def onnx_record(path: Path, data: bytes, meta: dict) -> ModelRecord:
    """The checked record of an ONNX file (its ``data`` and ``metadata_props``): pinned if bundled, else its own
    digests verified."""
    if RECORD_KEY not in meta:
        raise WeightsError(f"{path}: ONNX file without a faceage record; export it with 'faceage export'")
    record = ModelRecord.from_json(meta[RECORD_KEY], source=str(path))
    if not check_pinned(path, data):
        try:
            weights = onnx_digest(data)
        except ValueError as exc:
            raise WeightsError(f"{path}: bad model file: {exc}") from None
        verify(path, meta, weights)
    return record


def read_metadata(path: Path) -> dict:
    """A safetensors file's metadata (the record and its digests), from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise WeightsError(f"{path}: not a safetensors model file ({exc})") from exc


def _record(path: Path, meta: dict) -> ModelRecord:
    """The checked record of a file's metadata, its digest verified (the weights': :func:`load_model`)."""
    if RECORD_KEY not in meta:
        raise WeightsError(f"{path}: safetensors file without a faceage record; was it written by faceage?")
    record = ModelRecord.from_json(meta[RECORD_KEY], source=str(path))
    verify(path, meta, None)
    return record


def _metadata_of(path: Path, data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's bytes (an 8-byte little-endian header length, then JSON)."""
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("__metadata__ is not an object")
    except (ValueError, AttributeError) as exc:
        raise WeightsError(f"{path}: not a safetensors model file ({exc})") from None
    return meta


def numpy_tensors(state: dict) -> dict:
    """Torch tensors as numpy arrays (bfloat16, which numpy lacks, as its 16-bit pattern), for digests."""
    import torch

    return {k: (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
            for k, v in state.items()}


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, record). Errors name the file and the mismatch; weights that do not match
    their digest (or a bundled file that does not match its pinned one) are refused."""
    from safetensors.torch import load

    from faceage.nets.model import AgeNet

    path = resolve_model_path(path)
    data = path.read_bytes()  # once: the record, the weights and the digests all come from these bytes
    meta = _metadata_of(path, data)
    record = _record(path, meta)
    spec = record.model
    model = AgeNet(spec)
    try:
        state = load(data)
    except Exception as exc:  # safetensors raises several types for damaged tensor data
        raise WeightsError(f"{path}: the weights cannot be read ({exc}); the file is damaged") from exc
    if not check_pinned(path, data):
        verify(path, meta, tensors_digest(numpy_tensors(state)))
    state = _checked_tensors(state, model.state_dict(), path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise WeightsError(f"{path}: weights do not match {spec.name}: {' '.join(first)}") from exc
    model.to(device).eval()
    return model, record


def _checked_tensors(state: dict, expected: dict, path: Path) -> dict:
    """The file's tensors as the model's dtypes: floats only where the model has floats (stored as
    float16/bfloat16/float32), integers where it has integers, and no NaN or infinite weight."""
    import torch

    floats = (torch.float16, torch.bfloat16, torch.float32)
    out = {}
    for name, value in state.items():
        want = expected.get(name)
        if want is None:
            out[name] = value  # an unexpected name: load_state_dict reports it with the others
            continue
        if want.is_floating_point():
            if value.dtype not in floats:
                raise WeightsError(f"{path}: tensor {name} is {value.dtype}, expected a float (float16/32); "
                                   "the file was not written by faceage or is damaged")
            value = value.float()
            if not torch.isfinite(value).all():
                raise WeightsError(f"{path}: tensor {name} holds NaN or infinite values; the training diverged "
                                   "or the file is damaged: use an earlier checkpoint")
        elif value.is_floating_point() or value.dtype == torch.bool:
            raise WeightsError(f"{path}: tensor {name} is {value.dtype}, expected {want.dtype}")
        out[name] = value
    return out
