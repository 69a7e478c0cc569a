"""ONNX Runtime inference on aligned crops. Needs no PyTorch (and must never import it).

Files written by ``faceage export`` take uint8 NHWC crops and normalise inside
the graph; the model record (input size, crop geometry, estimate) is read from
the file's ``metadata_props`` (key ``faceage``). A float NCHW input (an ONNX
file exported by other means, with the record added) is normalised here in numpy.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceage.errors import WeightsError
from faceage.weights import ModelRecord

META_KEY = "faceage"


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
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise WeightsError(f"{path}: not a loadable ONNX model ({exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in meta:
            raise WeightsError(f"{path}: ONNX file without a faceage record; export it with 'faceage export'")
        self.record = ModelRecord.from_json(meta[META_KEY], source=str(path))
        self.precision = meta.get("faceage.precision", "fp32")
        self.path = path
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._uint8 = inp.type == "tensor(uint8)"
        outs = [o.name for o in self.session.get_outputs()]
        self._outputs = ["logits", "reg"] if {"logits", "reg"} <= set(outs) else outs[:2]
        self._scale = (1.0 / (255.0 * np.asarray(self.record.std, np.float32))).reshape(1, 3, 1, 1)
        self._shift = (-np.asarray(self.record.mean, np.float32) / np.asarray(self.record.std, np.float32)).reshape(
            1, 3, 1, 1)

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(crops, dtype=np.uint8)
        if x.ndim == 3:
            x = x[None]
        if not self._uint8:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) * self._scale + self._shift
        logits, reg = self.session.run(self._outputs, {self._input: x})
        return logits.astype(np.float32, copy=False), reg.reshape(-1).astype(np.float32, copy=False)
