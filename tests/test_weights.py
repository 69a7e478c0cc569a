import pytest
import torch
from safetensors.torch import save_file

from faceage.errors import WeightsError
from faceage.face.align import CropSpec
from faceage.nets.model import create_model
from faceage.nets.spec import ModelSpec
from faceage.models.weights import ModelRecord, load_model, read_record
from faceage.models.write import save_model


def _record(**kw):
    return ModelRecord(model=ModelSpec("sfv2", 0.5), **kw)


def test_roundtrip_keeps_outputs_and_record(tmp_path):
    torch.manual_seed(0)
    model = create_model("sfv2", 0.5).eval()
    path = save_model(model, _record(input_size=64, crop=CropSpec(64, 0.3, 0.4, 0.0)), tmp_path / "m.safetensors")
    loaded, rec = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x)[0], model(x)[0])
    assert rec.input_size == 64 and rec.crop.eye_distance == 0.3


def test_half_storage_is_smaller_and_close(tmp_path):
    model = create_model("sfv2", 0.5).eval()
    full = save_model(model, _record(), tmp_path / "f.safetensors")
    half = save_model(model, _record(), tmp_path / "h.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(load_model(half)[0](x)[1], model(x)[1], atol=0.05, rtol=0.01)


def test_bad_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load_model(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(WeightsError, match="without a faceage record"):
        read_record(bare)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="holds none of"):
        load_model(tmp_path)


def test_mismatched_architecture_is_rejected(tmp_path):
    path = save_model(create_model("sfv2", 0.5), _record(), tmp_path / "m.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    rec = ModelRecord(model=ModelSpec("ma_sfv2", 0.5))
    from safetensors.torch import load_file
    save_file(load_file(str(path)), str(wrong), metadata={"faceage": rec.to_json()})
    with pytest.raises(WeightsError, match="do not match ma_sfv2_0.5x"):
        load_model(wrong)


def test_loading_never_unpickles(tmp_path):
    import pickle

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsError):
        load_model(evil)


# --------------------------------------------------------------------------- records checked at load
def _with_record(tmp_path, record_json: str, name: str = "r.safetensors"):
    path = tmp_path / name
    save_file({"w": torch.zeros(2)}, str(path), metadata={"faceage": record_json})
    return path


GOOD = {"format": 1, "model": {"arch": "sfv2", "width": 0.5, "se_reduction": 4, "num_classes": 101},
        "input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "crop": {"size": 64, "eye_distance": 0.3, "eye_y": 0.4, "margin": 0.0}, "estimate": "dex", "training": {}}


@pytest.mark.parametrize("text", ["[1, 2]", "null", '"a string"', "42", "{not json"])
def test_record_that_is_not_an_object_names_the_file(tmp_path, text):
    with pytest.raises(WeightsError, match="r.safetensors") as err:
        read_record(_with_record(tmp_path, text))
    assert err.value.code == "bad_model_file"


@pytest.mark.parametrize("change, words", [
    ({"input_size": 0}, "input_size must be in 16..1024"),
    ({"input_size": -5}, "input_size"),
    ({"input_size": 20000}, "input_size"),
    ({"input_size": 64.5}, "whole number"),
    ({"input_size": True}, "input_size must be a whole number, not true"),
    ({"estimate": "mode"}, "estimate must be one of"),
    ({"std": [0.25, 0.0, 0.25]}, r"std\[1\] must be in 0.01..10"),
    ({"mean": [-50, -50, -50]}, r"mean\[0\] must be in 0..1, not -50"),  # once: a child passed with p_over 1.0
    ({"interval_temperature": 0.001}, "interval_temperature must be in 0.2..5"),  # an interval missing the age
    ({"logit_bias": [0.0] * 100 + [1e6]}, r"logit_bias must stay within \+-10"),  # once: everyone aged 100
    ({"std": [float("nan"), 0.2, 0.2]}, "finite"),
    ({"mean": [0.5, 0.5]}, "list of 3"),
    ({"crop": {"size": 0}}, "crop"),
    ({"crop": {"size": 64, "eye_distance": 5.0}}, "eye_distance"),
    ({"crop": {"sise": 64}}, "unknown keys"),
    ({"crop": "wide"}, "crop must be an object"),
    ({"model": {"arch": "sfv2"}}, "lacks width"),
    ({"model": {"arch": "sfv2", "width": 0.5, "depth": 3}}, "unknown fields"),
    ({"model": {"arch": "sfv2", "width": 0.5, "num_classes": 0}}, "num_classes"),
    ({"model": {"arch": "sfv2", "width": 0.75}}, r"unknown width 0.75; choose one of \[0.5, 1.0, 1.5, 2.0\]"),
    ({"model": {"arch": "resnet", "width": 0.5}}, "unknown architecture"),
    ({"scoring": {"tta": "sideways", "resize": "bilinear"}}, "scoring.tta"),
    ({"scoring": {"tta": "none", "resize": "lanczos"}}, "scoring.resize"),
    ({"interval_temperature": 0}, "interval_temperature"),
    ({"training": [1]}, "training must be an object"),
    ({"format": 2}, "record format 2"),
])
def test_bad_record_fields_fail_at_load_with_the_file_name(tmp_path, change, words):
    import json

    path = _with_record(tmp_path, json.dumps({**GOOD, **change}))
    with pytest.raises(WeightsError, match=f"r.safetensors.*{words}"):
        read_record(path)


def test_records_without_newer_fields_and_the_bundled_models_still_load(tmp_path):
    import json

    from faceage.models import locate

    from faceage.nets.spec import ModelSpec
    from faceage.models.weights import Scoring

    rec = read_record(_with_record(tmp_path, json.dumps(GOOD)))  # a record as version 1 and 2 wrote it
    assert rec.interval_temperature == 1.0 and rec.crop == CropSpec(64, 0.3, 0.4, 0.0) and rec.num_classes == 101
    assert rec.model == ModelSpec("sfv2", 0.5) and rec.scoring == Scoring("zoomflip", "bilinear")
    again = read_record(_with_record(tmp_path, rec.to_json(), "again.safetensors"))
    assert again == rec  # typed fields written and read back unchanged
    torch_file, onnx_file = locate(None, "torch"), locate(None, "onnx")
    bundled = read_record(torch_file)
    assert bundled.input_size == 112 and bundled.model.name == "ma_sfv2_0.5x" and bundled.crop is not None
    from faceage.runtime.onnx_backend import OnnxBackend

    assert OnnxBackend(onnx_file).record == read_record(torch_file)


def test_nan_and_integer_weights_are_refused(tmp_path):
    from safetensors.torch import load_file

    good = save_model(create_model("sfv2", 0.5), _record(), tmp_path / "good.safetensors")
    state, meta = load_file(str(good)), {"faceage": read_record(good).to_json()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    nan = dict(state, **{name: state[name].clone().fill_(float("nan"))})
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match=f"nan.safetensors: tensor {name} holds NaN"):
        load_model(tmp_path / "nan.safetensors")
    ints = {k: (v * 1000).to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    save_file(ints, str(tmp_path / "int.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match="int.safetensors: tensor .* is torch.int32, expected a float"):
        load_model(tmp_path / "int.safetensors")


def test_model_files_get_the_umask_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_model(create_model("sfv2", 0.5), _record(), tmp_path / "best.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- ONNX graphs checked at load
def _onnx(path, record: dict, *, outputs=("logits", "reg"), weight: float = 0.001, size: int = 16,
          open_size: bool = False, pooled: bool = False):
    """A tiny linear 'age model' graph (uint8 NHWC crops -> logits, reg) carrying ``record``. ``open_size``:
    the input's height and width are symbolic; ``pooled``: the pixels are averaged first, so any size runs."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((3 if pooled else size * size * 3, 101), weight, np.float32)
    flatten = (helper.make_node("ReduceMean", ["x", "hw"], ["flat"], keepdims=0) if pooled
               else helper.make_node("Flatten", ["x"], ["flat"], axis=1))
    nodes = [helper.make_node("Cast", ["crops"], ["x"], to=TensorProto.FLOAT),
             flatten,
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("ReduceMean", ["logits", "axes"], ["reg"], keepdims=0)]
    outs = {"logits": helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 101]),
            "reg": helper.make_tensor_value_info("reg", TensorProto.FLOAT, ["batch"])}
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(
            "crops", TensorProto.UINT8, ["batch", "h", "w", 3] if open_size else ["batch", size, size, 3])],
        [outs[o] for o in outputs],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(np.array([1, 2], np.int64), "hw")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"faceage": json.dumps(record)})
    onnx.save(model, str(path))
    return path


ONNX_RECORD = {**GOOD, "input_size": 16, "crop": None}


def test_onnx_graph_checked_against_the_record(tmp_path):
    from faceage.runtime.onnx_backend import OnnxBackend

    assert OnnxBackend(_onnx(tmp_path / "ok.onnx", ONNX_RECORD)).run(
        __import__("numpy").zeros((2, 16, 16, 3), "uint8"))[0].shape == (2, 101)
    with pytest.raises(WeightsError, match=r"one.onnx: the ONNX graph has outputs \['logits'\], expected"):
        OnnxBackend(_onnx(tmp_path / "one.onnx", ONNX_RECORD, outputs=("logits",)))
    with pytest.raises(WeightsError, match=r"size.onnx: ONNX input 'crops' has shape .* record asks for \['N', 32"):
        OnnxBackend(_onnx(tmp_path / "size.onnx", {**ONNX_RECORD, "input_size": 32}))
    with pytest.raises(WeightsError, match="classes.onnx: ONNX output 'logits'"):
        OnnxBackend(_onnx(tmp_path / "classes.onnx", {**ONNX_RECORD, "model": {**GOOD["model"], "num_classes": 50}}))
    with pytest.raises(WeightsError, match="nan.onnx: the model outputs NaN"):
        OnnxBackend(_onnx(tmp_path / "nan.onnx", ONNX_RECORD, weight=float("nan")))
    with pytest.raises(WeightsError, match="rec.onnx: bad faceage record: estimate"):
        OnnxBackend(_onnx(tmp_path / "rec.onnx", {**ONNX_RECORD, "estimate": "mode"}))


def test_onnx_input_size_the_graph_leaves_open(tmp_path):
    """A fixed size that disagrees with the record is refused (above); a symbolic one: the record's size
    wins, with a warning, and a graph that cannot run at it is refused at load."""
    import numpy as np

    from faceage.runtime.onnx_backend import OnnxBackend

    with pytest.warns(UserWarning, match="leaves its input size open; crops are made at the record's 24 px"):
        backend = OnnxBackend(_onnx(tmp_path / "open.onnx", {**ONNX_RECORD, "input_size": 24}, open_size=True,
                                    pooled=True))
    assert backend.record.input_size == 24 and backend.run(np.zeros((3, 24, 24, 3), np.uint8))[0].shape == (3, 101)
    with pytest.warns(UserWarning), pytest.raises(
            WeightsError, match=r"flat.onnx: the ONNX graph does not run on crops of the record's input size 32 px"):
        OnnxBackend(_onnx(tmp_path / "flat.onnx", {**ONNX_RECORD, "input_size": 32}, open_size=True))


def test_half_storage_keeps_values_float16_cannot_hold(tmp_path):
    """A BatchNorm running variance over 65504 once became infinity in a half-stored file, which then would not
    load (a LOPO fold's best weights)."""
    model = create_model("sfv2", 0.5).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var[0] = 1e6
    path = save_model(model, _record(), tmp_path / "h.safetensors", half=True)
    loaded, _ = load_model(path)
    name = next(n for n, b in model.named_buffers() if b is bn.running_var)
    assert loaded.state_dict()[name][0].item() == 1e6
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        dtypes = {k: fh.get_tensor(k).dtype for k in fh.keys()}
    assert dtypes[name] == torch.float32 and torch.float16 in dtypes.values()  # the rest still halved
