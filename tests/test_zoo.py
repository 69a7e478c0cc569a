"""Bundled models by name: AgeEstimator("fast"), --model fast, faceage models."""
import json
from pathlib import Path

import pytest

from faceage.cli import main
from faceage.errors import WeightsError
from faceage.models import DEFAULT, MODELS, list_models, locate

DATA = Path(__file__).parent / "data"


def test_every_bundled_model_has_both_files_with_the_same_record():
    from faceage.runtime.onnx_backend import OnnxBackend
    from faceage.models.weights import read_record

    assert list_models()[0] == DEFAULT and set(list_models()) == set(MODELS)
    for name in list_models():
        onnx, weights = locate(name, "onnx"), locate(name, "torch")
        assert onnx.suffix == ".onnx" and weights.suffix == ".safetensors"
        assert OnnxBackend(onnx).record == read_record(weights)
    assert locate() == locate(DEFAULT)


def test_names_paths_and_typos(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="did you mean fast"):
        locate("fsat")
    with pytest.raises(WeightsError, match="model file not found"):
        locate("no/such/model.onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()  # a run folder that happens to be called like a bundled model: the folder wins
    with pytest.raises(WeightsError, match="folder holds none of"):
        locate("fast")


def test_predict_by_name_is_the_default_model(capsys):
    assert main(["predict", str(DATA / "obama.jpg"), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["predict", str(DATA / "obama.jpg"), "--json", "--model", DEFAULT]) == 0
    assert json.loads(capsys.readouterr().out)["faces"] == default["faces"]
    assert main(["predict", str(DATA / "obama.jpg"), "--model", "fsat"]) == 4
    assert "did you mean fast" in capsys.readouterr().err


def test_models_command_lists_size_record_and_headline(capsys):
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == list_models() and rows[0]["default"]
    fast = rows[0]
    assert fast["arch"] == "ma_sfv2_0.5x" and fast["input_size"] == 112 and fast["params"] == 477259
    assert 1 < fast["files"]["onnx"]["mb"] < 8 and fast["headline"]["UTKFace val MAE"] > 0
    assert 18 in fast["age_checks"] and fast["ms_per_face"] > 0 and "faceage models --time" in fast["timed_by"]
    assert all("ms_per_face_here" not in r for r in rows)  # timing only when asked


def test_models_time_measures_every_model_here(capsys):
    assert main(["models", "--json", "--time"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(0 < r["ms_per_face_here"] < 1000 for r in rows)
    assert main(["models", "--time"]) == 0
    assert capsys.readouterr().out.count("ms here") == len(rows)


def test_accurate_by_name_in_the_api_cli_and_server(capsys):
    """The second bundled model is one name away everywhere, and it is a different model from the default."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from faceage import AgeEstimator
    from faceage.serve.app import create_app

    photo = DATA / "obama.jpg"
    age = AgeEstimator("accurate").predict(photo)[0].age
    assert abs(age - AgeEstimator().predict(photo)[0].age) > 1
    assert main(["predict", str(photo), "--json", "--model", "accurate"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"][0]["age"] == pytest.approx(age, abs=0.05)
    with TestClient(create_app("accurate")) as client:
        assert client.get("/healthz").json()["model"] == "accurate.onnx"
        faces = client.post("/v1/estimate", content=photo.read_bytes()).json()["faces"]
        assert faces[0]["age"] == pytest.approx(age, abs=0.05)
