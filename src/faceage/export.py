"""Export an age model to ONNX (fp32, or int8 with ONNX Runtime quantization).

The exported graph takes what the runtime already has, **uint8 aligned crops in
NHWC layout** (input ``crops``, shape ``(N, S, S, 3)``, any N), and does the
float conversion, the 0..1 scaling and the per-channel normalisation of the
model record inside the graph. So inference needs neither PyTorch nor any
preprocessing beyond cropping. Outputs: ``logits`` (N, 101) and ``reg`` (N,).

The model record (architecture, input size, mean/std, crop geometry, estimate)
is stored as JSON in the ONNX ``metadata_props`` under the key ``faceage``, so
an .onnx file is as self-describing as a .safetensors one;
:func:`read_onnx_record` reads it back without torch.

int8: ``int8="dynamic"`` quantizes weights only (activations quantized on the
fly, MatMul/Gemm only here: ORT's dynamic ConvInteger is slow on CPU);
``int8="static"`` writes a QDQ model whose activation ranges come from
calibration crops (real aligned faces: pass a (N, S, S, 3) uint8 array).

This module needs torch + onnx (the ``train`` extra); reading and running the
result does not (see :mod:`faceage.runtime.onnx_backend`).
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceage.models.digest import DIGEST_KEY, RECORD_KEY, digest_entry, onnx_digest
from faceage.errors import FaceageError
from faceage.core.preprocess import normalization
from faceage.models.weights import ModelRecord
from faceage.models.write import fits_half

INPUT_NAME = "crops"
OUTPUT_NAMES = ("logits", "reg")
INT8_MODES = (None, "dynamic", "static")


class ExportError(FaceageError):
    pass


def _wrapped(model, record: ModelRecord):
    """The network behind an in-graph uint8 NHWC -> normalised float NCHW step."""
    import torch
    from torch import nn

    class UInt8Input(nn.Module):
        def __init__(self, net, mean, std):
            super().__init__()
            self.net = net
            # x * scale + shift (faceage.core.preprocess.normalization): one Mul and one Add in the graph
            scale, shift = normalization(mean, std)
            self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1))
            self.register_buffer("shift", torch.from_numpy(shift).view(1, 3, 1, 1))

        def forward(self, crops):
            x = crops.permute(0, 3, 1, 2).to(torch.float32)
            return self.net(x * self.scale + self.shift)

    return UInt8Input(model, record.mean, record.std).eval()


def _set_metadata(path: Path, record: ModelRecord, extra: dict | None = None) -> None:
    import onnx

    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    props[RECORD_KEY] = record.to_json()
    props.update(extra or {})
    m.producer_name = "faceage"
    del m.metadata_props[:]  # the digest covers everything but the metadata: written last, from those bytes
    props[DIGEST_KEY] = digest_entry(props[RECORD_KEY], onnx_digest(m.SerializeToString()))
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.save(m, str(path))


def write_onnx_record(path: str | Path, record: ModelRecord) -> Path:
    """Replace an .onnx file's faceage record (its graph and other metadata kept), atomically."""
    import shutil

    path = Path(path)
    read_onnx_record(path)  # a faceage ONNX file
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(path, tmp)
    _set_metadata(tmp, record)
    tmp.replace(path)
    return path


def read_onnx_record(path: str | Path) -> ModelRecord:
    """The faceage record in an .onnx file's metadata (onnxruntime only, no torch/onnx)."""
    from faceage.runtime.onnx_backend import OnnxBackend

    return OnnxBackend(path, threads=1).record


def precision_label(int8: str | None = None, half: bool = False) -> str:
    """How an exported file computes and stores its weights, as its metadata and ``faceage export`` say it."""
    return int8 or ("fp32, weights stored as fp16" if half else "fp32")


def half_weights(path: str | Path, min_size: int = 1024) -> None:
    """Store ``path``'s large fp32 weights as fp16, each cast back to fp32 in the graph: half the file, the same
    fp32 arithmetic (ONNX Runtime folds the casts of constants once, when a session loads)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    casts = []
    for init in m.graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            continue
        values = numpy_helper.to_array(init)
        if not fits_half(values):  # beyond float16's range: stays float32 (infinity otherwise)
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


#: channel counts ONNX Runtime's blocked-layout (NCHWc) convolutions take on AVX-512 CPUs (8 on AVX2)
CHANNEL_BLOCK = 16


def cpu_friendly(path: str | Path) -> None:
    """Rewrite an exported graph, in place, into operations ONNX Runtime's CPU kernels run in their blocked
    layout (NCHWc), with fewer layout conversions between them; the same function up to float rounding.

    * A mean over the two spatial axes becomes GlobalAveragePool (then Flatten where the axes are dropped).
    * The hidden 1x1 convolutions of squeeze-and-excitation (GlobalAveragePool -> Conv -> Relu -> Conv) get
      zero channels up to a multiple of :data:`CHANNEL_BLOCK`: a zero channel is relu(0) = 0 and has zero
      weight in the second convolution.
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    known = onnx.shape_inference.infer_shapes(m).graph
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in (*known.input, *known.value_info)
            if v.type.tensor_type.HasField("shape")}
    nodes = []
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "ReduceMean" or list(attrs.get("axes", [])) not in ([2, 3], [-2, -1])
                or rank.get(n.input[0]) != 4):
            nodes.append(n)
        elif attrs.get("keepdims", 1):
            nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]], name=n.name))
        else:
            nodes += [helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0] + "_pooled"], name=n.name),
                      helper.make_node("Flatten", [n.output[0] + "_pooled"], [n.output[0]], axis=1,
                                       name=n.name + "_flatten")]
    del g.node[:]
    g.node.extend(nodes)
    users: dict[str, list] = {}
    for n in g.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    inits = {t.name: t for t in g.initializer}

    def only_user(name: str, op: str):
        found = users.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    for pool in [n for n in g.node if n.op_type == "GlobalAveragePool"]:
        fc1 = only_user(pool.output[0], "Conv")
        relu = fc1 and only_user(fc1.output[0], "Relu")
        fc2 = relu and only_user(relu.output[0], "Conv")
        weights = (*fc1.input[1:], fc2.input[1]) if fc2 else ()
        grouped = fc2 and any(a.name == "group" and a.i != 1 for a in (*fc1.attribute, *fc2.attribute))
        if len(weights) != 3 or grouped or any(w not in inits or len(users[w]) != 1 for w in weights):
            continue  # not squeeze-and-excitation with biased, unshared, ungrouped weights
        w1, b1, w2 = (numpy_helper.to_array(inits[w]) for w in weights)
        pad = -len(w1) % CHANNEL_BLOCK
        if pad and w1.shape[2:] == (1, 1) and w2.shape[1:] == (len(w1), 1, 1):
            grown = (np.concatenate([w1, np.zeros((pad, *w1.shape[1:]), w1.dtype)]),
                     np.concatenate([b1, np.zeros(pad, b1.dtype)]),
                     np.concatenate([w2, np.zeros((len(w2), pad, 1, 1), w2.dtype)], axis=1))
            for name, values in zip(weights, grown):
                inits[name].CopyFrom(numpy_helper.from_array(values, name))
    del g.value_info[:]  # shapes recorded at export no longer hold for the grown tensors; ORT infers them
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_fp32(model, record: ModelRecord, out: str | Path, *, opset: int = 17, half: bool = False) -> Path:
    """Write ``model`` (an AgeNet in eval mode) as an fp32 ONNX file with uint8 NHWC input (``half``: its weights
    stored as fp16, :func:`half_weights`)."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    s = record.input_size
    wrapped = _wrapped(model, record)
    dummy = torch.zeros(2, s, s, 3, dtype=torch.uint8)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        torch.onnx.export(
            wrapped, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}, "reg": {0: "batch"}},
            opset_version=opset, dynamo=False, do_constant_folding=True,
        )
    cpu_friendly(tmp)
    if half:
        half_weights(tmp)
    _set_metadata(tmp, record, {"faceage.precision": precision_label(half=half),
                                "faceage.input": "uint8 NHWC crops, normalised in-graph"})
    tmp.replace(out)
    return out


class CropReader:
    """onnxruntime CalibrationDataReader over uint8 crops, ``batch`` at a time."""

    def __init__(self, crops: np.ndarray, batch: int = 16) -> None:
        self.crops, self.batch, self.i = crops, batch, 0

    def get_next(self):
        if self.i >= len(self.crops):
            return None
        b = self.crops[self.i : self.i + self.batch]
        self.i += self.batch
        return {INPUT_NAME: np.ascontiguousarray(b, dtype=np.uint8)}

    def rewind(self) -> None:
        self.i = 0


def quantize(fp32_path: str | Path, out: str | Path, mode: str, calibration: np.ndarray | None = None) -> Path:
    """int8 copy of an exported fp32 model. ``mode``: "dynamic" or "static" (needs ``calibration`` crops)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out = Path(fp32_path), Path(out)
    record = read_onnx_record(fp32_path)
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        tmp = out.with_name(out.name + ".tmp")
        if mode == "dynamic":
            # weights int8; Conv stays fp32 (ORT's ConvInteger is slower than fp32 Conv on CPU)
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        elif mode == "static":
            if calibration is None or len(calibration) == 0:
                raise ExportError("static int8 needs calibration crops (real aligned faces)")
            cal = np.asarray(calibration, dtype=np.uint8)
            if cal.shape[1:] != (record.input_size, record.input_size, 3):
                raise ExportError(f"calibration crops are {cal.shape[1:]}, model expects "
                                  f"({record.input_size}, {record.input_size}, 3)")
            quantize_static(
                str(pre), str(tmp), CropReader(cal), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
                # the head's last layers decide the age to a fraction of a year: keep them float
                nodes_to_exclude=_head_nodes(pre),
            )
        else:
            raise ExportError(f"unknown int8 mode {mode!r}; choose dynamic or static")
    _set_metadata(tmp, record, {"faceage.precision": f"int8-{mode}",
                                "faceage.input": "uint8 NHWC crops, normalised in-graph"})
    tmp.replace(out)
    return out


def _head_nodes(path: Path) -> list[str]:
    """Names of the Gemm/MatMul nodes of the age head (the last ones before the outputs)."""
    import onnx

    m = onnx.load(str(path))
    return [n.name for n in m.graph.node if n.op_type in ("Gemm", "MatMul")]


def load_crops(source: str | Path, size: int, limit: int = 256, *, fallback: bool = False,
               split: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(crops (N, size, size, 3) uint8, ages or None) from a manifest CSV or a folder of aligned crops.

    Up to ``limit`` images, an evenly spaced (deterministic) subset when there are more;
    manifest rows marked ``fallback`` (no face was found) are skipped unless ``fallback``;
    ``split``: only manifest rows of that split (e.g. "val" of a run's split.csv)."""
    from faceage.core.preprocess import resize_crop
    from faceage.core.imageio import load_image

    source = Path(source)
    ages = None
    if source.is_dir():
        from faceage.core.imageio import IMAGE_SUFFIXES

        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        from faceage.data.manifest import read_manifest

        samples = [s for s in read_manifest(source).samples
                   if (fallback or not s.fallback) and (split is None or s.split == split)]
        paths, ages = [Path(s.path) for s in samples], [s.age for s in samples]
    else:
        raise ExportError(f"{source}: calibration manifest or folder not found")
    if not paths:
        raise ExportError(f"{source}: no images")
    if len(paths) > limit:
        idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in idx]
        ages = [ages[i] for i in idx] if ages is not None else None
    crops = np.stack([resize_crop(load_image(p), size) for p in paths])
    return crops, (np.asarray(ages, np.float64) if ages is not None else None)


@dataclass
class Parity:
    n: int
    max_age_diff: float
    mean_age_diff: float
    max_logit_diff: float
    max_reg_diff: float

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def parity(model_path: str | Path, onnx_path: str | Path, crops: np.ndarray) -> Parity:
    """Compare ONNX Runtime (``onnx_path``) with the torch backend (``model_path``) on the same crops."""
    from faceage.core.ages import combine
    from faceage.runtime.onnx_backend import OnnxBackend
    from faceage.runtime.torch_backend import TorchBackend

    crops = np.ascontiguousarray(crops, dtype=np.uint8)
    tb, ob = TorchBackend(model_path), OnnxBackend(onnx_path)
    lt, rt = tb.run(crops)
    lo, ro = ob.run(crops)
    at = combine(lt, rt, tb.record.estimate)
    ao = combine(lo, ro, tb.record.estimate)
    d = np.abs(at - ao)
    return Parity(len(crops), float(d.max()), float(d.mean()), float(np.abs(lt - lo).max()),
                  float(np.abs(rt - ro).max()))


def export_onnx(model_path: str | Path, out: str | Path, *, int8: str | None = None,
                calibration: np.ndarray | None = None, opset: int = 17, half: bool = False) -> Path:
    """Export a faceage model (file or run folder) to ONNX at ``out``.

    ``int8``: None (fp32), "dynamic" or "static" (``calibration``: uint8 crops
    (N, S, S, 3) of real aligned faces at the model's input size). ``half``: fp32 arithmetic with the
    weights stored as fp16 (half the file; not with ``int8``)."""
    from faceage.models.weights import load_model

    if int8 not in INT8_MODES:
        raise ExportError(f"unknown int8 mode {int8!r}; choose dynamic or static")
    if half and int8:
        raise ExportError("half-precision weights and int8 are two ways to shrink the file: choose one")
    model, record = load_model(model_path)
    out = Path(out)
    if int8 is None:
        return export_fp32(model, record, out, opset=opset, half=half)
    with tempfile.TemporaryDirectory() as td:
        fp32 = export_fp32(model, record, Path(td) / "fp32.onnx", opset=opset)
        return quantize(fp32, out, int8, calibration)
