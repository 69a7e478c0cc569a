"""ONNX Runtime inference on aligned crops. Needs no PyTorch (and must never import it).

Files written by ``faceage export`` take uint8 NHWC crops and normalise inside
the graph; the model record (input size, crop geometry, estimate) is read from
the file's ``metadata_props`` (key ``faceage``). A float NCHW input (an ONNX
file exported by other means, with the record added) is normalised here in numpy.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from faceage.errors import WeightsError
from faceage.core.preprocess import normalize_nchw
from faceage.models.weights import onnx_record

#: the graph's outputs, by name (never by position)
OUTPUTS = ("logits", "reg")


def _threads() -> int:
    v = os.environ.get("FACEAGE_THREADS", "")
    return int(v) if v.isdigit() else 0  # 0: onnxruntime's default (one per physical core)


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: model file not found")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        n = _threads() if threads is None else threads
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        data = path.read_bytes()  # once: the session, the record and the digests all come from these bytes
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise WeightsError(f"{path}: not a loadable ONNX model ({exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        self.record = onnx_record(path, data, meta)
        self.precision = meta.get("faceage.precision", "fp32")
        self.path = path
        self._input, self._uint8 = self._check_graph()
        self._outputs = list(OUTPUTS)
        self._check_outputs()

    def _check_graph(self) -> tuple[str, bool]:
        """The graph's one input (name, uint8?) after checking inputs and outputs against the record."""
        s, n = self.record.input_size, self.record.num_classes
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise WeightsError(f"{self.path}: the ONNX graph has {len(inputs)} inputs, expected one (the crops); "
                               "export the model with 'faceage export'")
        inp = inputs[0]
        if inp.type == "tensor(uint8)":
            wanted = (None, s, s, 3)  # NHWC crops, normalised inside the graph ('faceage export')
        elif inp.type == "tensor(float)":
            wanted = (None, 3, s, s)  # NCHW, normalised here with the record's mean and std
        else:
            raise WeightsError(f"{self.path}: the ONNX input {inp.name!r} is {inp.type}, expected uint8 NHWC or "
                               "float NCHW crops")
        _check_shape(self.path, f"input {inp.name!r}", inp.shape, wanted)
        if any(w is not None and not isinstance(d, int) for d, w in zip(inp.shape, wanted)):
            # nothing in the graph says what size it was trained at: the record's size is used, and the
            # load-time run (_check_outputs) is the check that the graph takes it
            warnings.warn(f"{self.path}: the ONNX graph leaves its input size open; crops are made at the record's "
                          f"{s} px, so the record must give the size the model was trained at", stacklevel=3)
        outs = {o.name: o for o in self.session.get_outputs()}
        if any(name not in outs for name in OUTPUTS):
            raise WeightsError(f"{self.path}: the ONNX graph has outputs {sorted(outs)}, expected {list(OUTPUTS)}; "
                               "export the model with 'faceage export'")
        reg = (None, 1) if len(outs["reg"].shape or ()) == 2 else (None,)  # (N,) or (N, 1)
        for name, shape in (("logits", (None, n)), ("reg", reg)):
            if outs[name].type != "tensor(float)":
                raise WeightsError(f"{self.path}: ONNX output {name!r} is {outs[name].type}, expected tensor(float)")
            _check_shape(self.path, f"output {name!r}", outs[name].shape, shape)
        return inp.name, inp.type == "tensor(uint8)"

    def _check_outputs(self) -> None:
        """Run a grey crop of the record's size once: a graph that does not take that size (its size
        left open in the graph), wrong output shapes, NaN weights or constants show up here, at load,
        not at the first photo or as NaN ages."""
        s, n = self.record.input_size, self.record.num_classes
        try:
            logits, reg = self.run(np.full((2, s, s, 3), 127, np.uint8))
        except WeightsError as exc:
            raise WeightsError(f"{self.path}: the ONNX graph does not run on crops of the record's input size "
                               f"{s} px ({exc.__cause__ or exc}); the record and the graph disagree: re-export the "
                               "model with 'faceage export'") from None
        if logits.shape != (2, n) or reg.shape != (2,):
            raise WeightsError(f"{self.path}: on two {s} px crops the ONNX graph gives logits {list(logits.shape)} "
                               f"and reg {list(reg.shape)}, expected [2, {n}] and [2]; the record and the graph "
                               "disagree: re-export the model with 'faceage export'")
        if not (np.isfinite(logits).all() and np.isfinite(reg).all()):
            raise WeightsError(f"{self.path}: the model outputs NaN or infinite values on a grey test crop; its "
                               "weights are damaged: re-export it from a good checkpoint")

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(crops, dtype=np.uint8)
        if x.ndim == 3:
            x = x[None]
        if not self._uint8:
            x = normalize_nchw(x, self.record.mean, self.record.std)
        try:
            logits, reg = self.session.run(self._outputs, {self._input: x})
        except Exception as exc:  # onnxruntime's own exception types; the graph was checked at load
            raise WeightsError(f"{self.path}: ONNX Runtime failed on a batch of {x.shape} ({exc})") from exc
        return logits.astype(np.float32, copy=False), reg.reshape(-1).astype(np.float32, copy=False)


def _check_shape(path: Path, what: str, shape: list, wanted: tuple) -> None:
    """Fixed dimensions must match; symbolic ones (a batch axis named 'batch') may be anything."""
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(fixed) != len(wanted) or any(d is not None and w is not None and d != w for d, w in zip(fixed, wanted)):
        shown = ["N" if w is None else w for w in wanted]
        raise WeightsError(f"{path}: ONNX {what} has shape {list(shape)}, the record asks for {shown}; the record "
                           "and the graph disagree: re-export the model with 'faceage export'")
