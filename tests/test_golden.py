"""Each bundled model's outputs pinned on committed public-domain photos (runs on a fresh clone).

Regenerate tests/data/golden.json with ``python -m scripts.golden --write`` only for an intended change of
a model or the face front end, and say so in the commit."""
import json
from pathlib import Path

import numpy as np
import pytest

from faceage import AgeEstimator
from faceage.models import DEFAULT, list_models, locate
from faceage.export import parity
from faceage.core.imageio import load_image

DATA = Path(__file__).parent / "data"
GOLDEN_FILE = json.loads((DATA / "golden.json").read_text())
GOLDEN = GOLDEN_FILE["models"]
BOX_PX, AGE_YEARS = 2, 0.1


def test_every_bundled_model_has_goldens():
    assert sorted(GOLDEN) == sorted(list_models()), "run python -m scripts.golden --write for a new model"
    assert GOLDEN_FILE["default"] == DEFAULT, "the default model changed: run python -m scripts.golden --write"


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_bundled_model_matches_golden_outputs(model, backend):
    import hashlib

    digest = hashlib.sha256(locate(model, backend).read_bytes()).hexdigest()[:16]
    assert digest == GOLDEN[model]["model"][backend], f"the bundled model {model} changed: run python -m scripts.golden"
    est = AgeEstimator(model, backend=backend)
    for name, want in GOLDEN[model]["faces"][backend].items():
        got = est.predict(DATA / name)
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            assert np.abs(np.subtract(g.box, w["box"])).max() <= BOX_PX, (name, g.box, w["box"])
            assert abs(g.age - w["age"]) <= AGE_YEARS, (name, g.age, w["age"])


@pytest.mark.parametrize("model", list_models())
def test_golden_photos_hold_the_faces_their_readme_lists(model):
    faces = GOLDEN[model]["faces"]["onnx"]
    assert [len(faces[n]) for n in ("obama.jpg", "biden.jpg", "obama_and_biden.jpg")] == [1, 1, 3]
    assert 35 <= faces["obama.jpg"][0]["age"] <= 60  # 47 at the time of the portrait


@pytest.mark.parametrize("model", list_models())
def test_bundled_onnx_and_safetensors_are_the_same_model(model):
    est = AgeEstimator(model, backend="onnx")
    crops = np.stack([f.crop for name in ("obama.jpg", "obama_and_biden.jpg")
                      for f in est.pipeline.faces(load_image(DATA / name))])
    from faceage.core.preprocess import input_batch

    p = parity(locate(model, "torch"), locate(model, "onnx"), input_batch(crops, est.input_size))
    assert p.n == 4 and p.max_age_diff < 0.05 and p.max_logit_diff < 1e-3, p
