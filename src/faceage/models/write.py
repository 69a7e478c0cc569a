"""Writing model files: weights and their record (training, export, fitting age checks). Reading them, which
inference does, is :mod:`faceage.models.weights`."""
from __future__ import annotations

import os
from pathlib import Path

from faceage.errors import WeightsError
from faceage.models.digest import DIGEST_KEY, RECORD_KEY, digest_entry, tensors_digest
from faceage.models.weights import ModelRecord, numpy_tensors, read_record, resolve_model_path


def _metadata(record: ModelRecord, tensors: dict) -> dict:
    text = record.to_json()
    return {RECORD_KEY: text, DIGEST_KEY: digest_entry(text, tensors_digest(tensors))}


def save_model(model, record: ModelRecord, path: str | Path, half: bool = False) -> Path:
    """Write weights (optionally stored as float16) and record atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if half and v.is_floating_point() and fits_half(v.float().numpy()) else v
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=_metadata(record, numpy_tensors(state)))
    os.chmod(tmp, 0o666 & ~_umask())  # the permissions of any other file written here (not the writer's 0600)
    tmp.replace(path)
    return path


def fits_half(values) -> bool:
    """Whether ``values`` fit float16 (largest 65504) without turning infinite (a BatchNorm variance may not)."""
    import numpy as np

    a = np.asarray(values)
    return a.size == 0 or bool(np.isfinite(a).all() and np.abs(a).max() <= np.finfo(np.float16).max)


def write_record(path: str | Path, record: ModelRecord) -> Path:
    """Replace a .safetensors file's record, its tensors kept byte for byte (no torch needed), atomically."""
    from safetensors.numpy import load_file, save_file

    path = resolve_model_path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: write_record writes .safetensors files; for ONNX use "
                           "faceage.export.write_onnx_record")
    read_record(path)  # a file faceage wrote, with a valid record
    tmp = path.with_name(path.name + ".tmp")
    tensors = load_file(str(path))
    save_file(tensors, str(tmp), metadata=_metadata(record, tensors))
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
