"""NaN or infinite model outputs are a per-face error with a code (bad_model_output) on every surface:
the Python API, predict (text, --json, exit status 4), batch rows, the image route and the video route.
The model (conftest.nan_model) is finite on the load-time grey crop and NaN on every real face."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_PHOTOS
from faceage.cli import main

PHOTO = TEST_PHOTOS / "obama.jpg"


@pytest.fixture(scope="module")
def nan_estimator(nan_model):
    from faceage.estimator import AgeEstimator

    return AgeEstimator(nan_model)


def test_the_api_gives_faces_without_an_age(nan_estimator):
    faces = nan_estimator.predict(PHOTO)
    assert faces and all(f.age is None and f.age_interval is None and f.code == "bad_model_output" for f in faces)
    d = faces[0].to_dict()
    assert "nan.onnx gave NaN or infinite outputs" in d["error"] and d["code"] == "bad_model_output"
    json.dumps(d, allow_nan=False)  # plain JSON
    est = nan_estimator.predict_aligned(np.full((2, 112, 112, 3), 127, np.uint8))  # finite: ages as ever
    assert all(e.error is None and e.age is not None for e in est)
    from faceage.annotate import annotate

    assert annotate(np.asarray(__import__("PIL.Image").Image.open(PHOTO).convert("RGB")), faces).size


def test_predict_reports_each_face_and_exits_4(nan_model, capsys):
    assert main(["predict", str(PHOTO), "--model", str(nan_model), "--json"]) == 4
    out, err = capsys.readouterr()
    doc = json.loads(out)  # valid JSON: no NaN
    assert doc["faces"] and all(f["age"] is None and f["code"] == "bad_model_output" for f in doc["faces"])
    assert "faces got NaN or infinite model outputs (no age) [bad_model_output]" in err
    assert main(["predict", str(PHOTO), "--model", str(nan_model)]) == 4
    err = capsys.readouterr().err
    assert "obama.jpg: box [" in err and "error: the model nan.onnx gave NaN" in err and "[bad_model_output]" in err


def test_batch_rows_carry_the_error(nan_estimator):
    from faceage.engine import COLUMNS, photo_rows
    from faceage.estimator import FACE_FIELDS, FaceAge
    from faceage.core.options import FaceOptions

    rows = photo_rows(nan_estimator, str(PHOTO), str(PHOTO), FaceOptions())
    assert rows and all(set(r) == set(COLUMNS) for r in rows)
    assert all(r["age"] is None and r["face"] == i and "gave NaN or infinite outputs" in r["error"]
               and r["code"] == "bad_model_output" for i, r in enumerate(rows))
    faces = [FaceAge.from_dict(r) for r in rows if r["face"] is not None]
    as_json = [{k: r[k] for k in FACE_FIELDS} | {"error": r["error"], "code": r["code"]} for r in rows]
    assert [f.to_dict() for f in faces] == as_json  # rows give predict --json's faces back


def test_the_image_route_answers_200_with_per_face_errors(nan_estimator):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from faceage.serve.app import create_app

    with TestClient(create_app(nan_estimator), raise_server_exceptions=False) as client:
        r = client.post("/v1/estimate", content=PHOTO.read_bytes())
        assert r.status_code == 200, r.text
        faces = r.json()["faces"]
        assert faces and all(f["age"] is None and f["code"] == "bad_model_output" and f["error"] for f in faces)
        grey = client.post("/v1/estimate?fallback=true", content=_png(np.full((64, 64, 3), 127, np.uint8)))
        assert set(grey.json()["faces"][0]) == {"box", "eyes", "age", "age_interval", "score", "fallback"}


def _png(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_the_video_route_skips_such_faces_with_a_warning(nan_estimator, tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from PIL import Image

    from faceage.serve.app import create_app
    from faceage.video.writer import VideoWriter

    frame = np.asarray(Image.open(PHOTO).convert("RGB").resize((320, 400)))
    clip = tmp_path / "face.mp4"
    with VideoWriter(clip, fps=10) as w:
        for i in range(6):
            w.write(frame, i / 10)
    with TestClient(create_app(nan_estimator), raise_server_exceptions=False) as client:
        r = client.post("/v1/estimate-video?every=1&min_track=1", content=clip.read_bytes())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["tracks"] == [] and any("[bad_model_output]" in w for w in doc["warnings"])


def test_an_age_check_refers_a_face_without_an_age():
    from faceage.checks.fitting import checks, policy_for
    from faceage.estimator import AgeEstimator
    from faceage.core.scoring import Scores

    record = AgeEstimator().record
    logits = np.zeros((2, 101), np.float32)
    logits[1, 3] = np.nan
    got = checks(Scores(logits, np.zeros(2, np.float32), "dex"), policy_for(record, 18), model="m.onnx")
    assert got[0].error is None and got[0].p_over is not None
    assert (got[1].age, got[1].p_over, got[1].decision) == (None, None, "refer")
    assert got[1].to_dict()["code"] == "bad_model_output" and "m.onnx gave NaN" in got[1].error
    json.dumps([c.to_dict() for c in got], allow_nan=False)
