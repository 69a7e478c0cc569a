"""Tampered or damaged model files never answer: digests of record and weights, pinned bundled files, derived
numbers checked against what they derive from (each case here once gave a wrong answer with exit 0)."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from faceage.models.digest import DIGEST_KEY
from faceage.errors import WeightsError
from faceage.face.align import CropSpec
from faceage.models.digest import PINNED
from faceage.models import MODELS, locate
from faceage.nets.model import create_model
from faceage.models.weights import ModelRecord, load_model, read_record
from faceage.models.write import save_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from faceage.export import export_onnx

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("integrity")
    record = ModelRecord(model=create_model("sfv2", 0.5).spec, input_size=32, crop=CropSpec(size=32))
    st = save_model(create_model("sfv2", 0.5).eval(), record, root / "m.safetensors")
    return {"st": st, "onnx": export_onnx(st, root / "m.onnx"), "root": root}


def _edit_safetensors_record(src, dst, edit) -> None:
    """Rewrite the record's JSON in the file's header by hand (the digest entry left as it was)."""
    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    record = json.loads(header["__metadata__"]["faceage"])
    edit(record)
    header["__metadata__"]["faceage"] = json.dumps(record, sort_keys=True)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def test_files_faceage_writes_carry_digests_that_verify(files):
    from faceage.runtime.onnx_backend import OnnxBackend

    load_model(files["st"])
    OnnxBackend(files["onnx"])
    from safetensors import safe_open

    with safe_open(str(files["st"]), framework="numpy") as fh:
        assert set(json.loads(fh.metadata()[DIGEST_KEY])) == {"record", "weights"}


def test_a_record_edited_by_hand_is_refused(files, tmp_path):
    """input_size 64 in a safetensors record once ran at 64 px (Obama read 68.9)."""
    bad = tmp_path / "bad.safetensors"
    _edit_safetensors_record(files["st"], bad, lambda r: r.update(input_size=64))
    for load in (read_record, load_model):
        with pytest.raises(WeightsError, match="bad.safetensors: bad model file: the faceage record does not match "
                                               "its digest") as err:
            load(bad)
        assert err.value.code == "bad_model_file"


def test_one_flipped_byte_in_the_weights_is_refused(files, tmp_path):
    data = bytearray(files["st"].read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's bytes
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    read_record(bad)  # the record alone is intact
    with pytest.raises(WeightsError, match="flip.safetensors: bad model file: the weights do not match"):
        load_model(bad)


def test_onnx_files_refuse_edited_records_and_weights(files, tmp_path):
    import onnx
    from onnx import numpy_helper

    from faceage.runtime.onnx_backend import OnnxBackend

    m = onnx.load(str(files["onnx"]))
    for p in m.metadata_props:
        if p.key == "faceage":
            rec = json.loads(p.value)
            rec["model"]["width"] = 2.0  # once accepted
            p.value = json.dumps(rec, sort_keys=True)
    onnx.save(m, str(tmp_path / "rec.onnx"))
    for load in (OnnxBackend, read_record):  # read_record: from the file's metadata alone, no session
        with pytest.raises(WeightsError, match="rec.onnx: bad model file: the faceage record does not match"):
            load(tmp_path / "rec.onnx")
    m = onnx.load(str(files["onnx"]))
    init = next(t for t in m.graph.initializer if numpy_helper.to_array(t).size > 100)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(tmp_path / "w.onnx"))
    for load in (OnnxBackend, read_record):
        with pytest.raises(WeightsError, match="w.onnx: bad model file: the weights do not match"):
            load(tmp_path / "w.onnx")
    assert read_record(files["onnx"]) == OnnxBackend(files["onnx"]).record
    (tmp_path / "junk.onnx").write_bytes(b"\x0f\xff\xff")
    with pytest.raises(WeightsError, match="junk.onnx: not an ONNX model file"):
        read_record(tmp_path / "junk.onnx")


def test_files_written_before_digests_still_load(files, tmp_path):
    """A model trained with an earlier faceage has no digest: it loads (faceage models --info says so)."""
    from safetensors.numpy import load_file, save_file

    old = tmp_path / "old.safetensors"
    save_file(load_file(str(files["st"])), str(old), metadata={"faceage": read_record(files["st"]).to_json()})
    load_model(old)


def test_the_bundled_files_match_their_pinned_digests():
    for name, model in MODELS.items():
        for backend in ("onnx", "torch"):
            path = model.file(backend)
            assert PINNED[path.name] == hashlib.sha256(path.read_bytes()).hexdigest(), \
                f"{path.name} changed: pin its new sha256 in src/faceage/models/SHA256SUMS"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_an_altered_bundled_file_is_refused(backend, monkeypatch):
    """A bundled file whose digests were recomputed after an edit still differs from the pinned one."""
    from faceage import AgeEstimator

    path = locate("fast", backend)
    monkeypatch.setitem(PINNED, path.name, "0" * 64)
    with pytest.raises(WeightsError, match="does not match the digest faceage was released with"):
        AgeEstimator("fast", backend=backend)


def test_a_policy_whose_logit_threshold_was_edited_is_refused(tmp_path):
    """logit_threshold -1000 once passed a 15-year-old (p_over 0.054) as over 18, exit 0."""
    bad = tmp_path / "policy.safetensors"
    bundled = locate("fast", "torch")
    _edit_safetensors_record(bundled, bad, lambda r: r["age_checks"]["18"].update(logit_threshold=-1000))
    with pytest.raises(WeightsError, match=r"age_checks\[18\]: threshold 0\.\d+ disagrees with its calibration "
                                           r"at logit_threshold -1000"):
        read_record(bad)
    shutil.copy(bundled, tmp_path / "copy.safetensors")  # an untouched copy elsewhere: its own digests verify
    read_record(tmp_path / "copy.safetensors")
    assert np.isfinite(load_model(tmp_path / "copy.safetensors")[1].input_size)


def test_models_info_says_whether_a_file_is_intact_and_what_is_extreme(files, tmp_path, capsys):
    from dataclasses import replace

    from safetensors.numpy import load_file, save_file

    from faceage.cli import main

    assert main(["models", "--info", "fast"]) == 0
    out = capsys.readouterr().out
    assert "matches the sha256 it was released with" in out and "over 18: pass if p_over >= 0." in out
    assert "warning" not in out
    assert main(["models", "--info", str(files["st"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"] == "verified"
    rec = replace(read_record(files["st"]), interval_temperature=0.3)  # valid, but far from the network's own
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(files["st"])), str(old), metadata={"faceage": rec.to_json()})
    assert main(["models", "--info", str(old)]) == 0
    out = capsys.readouterr().out
    assert "no digests" in out and "warning: interval_temperature 0.3: intervals much narrower" in out
    bad = tmp_path / "bad.safetensors"
    _edit_safetensors_record(files["st"], bad, lambda r: r.update(input_size=64))
    assert main(["models", "--info", str(bad)]) == 4
    assert "[bad_model_file]" in capsys.readouterr().err
