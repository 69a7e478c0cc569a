import pytest
import torch
from safetensors.torch import save_file

from faceage.errors import WeightsError
from faceage.nets.model import create_model
from faceage.weights import ModelRecord, load_model, read_record, save_model


def _record(**kw):
    return ModelRecord(model={"arch": "sfv2", "width": 0.5, "se_reduction": 4, "num_classes": 101}, **kw)


def test_roundtrip_keeps_outputs_and_record(tmp_path):
    torch.manual_seed(0)
    model = create_model("sfv2", 0.5).eval()
    path = save_model(model, _record(input_size=64, crop={"size": 64, "eye_distance": 0.3, "eye_y": 0.4,
                                                          "margin": 0.0}), tmp_path / "m.safetensors")
    loaded, rec = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x)[0], model(x)[0])
    assert rec.input_size == 64 and rec.crop["eye_distance"] == 0.3


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
    rec = ModelRecord(model={"arch": "ma_sfv2", "width": 0.5, "se_reduction": 4, "num_classes": 101})
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
