import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceage.errors import ConfigError
from faceage.face.align import CropSpec, align, alignment_matrix, center_crop, center_crop_eyes, eye_angle
from faceage.face.detect import DETECTORS, Detection, get_detector, register_detector
from faceage.face.pipeline import Face, FacePipeline

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FGNET = DATA / "fgnet" / "images"


def test_cropspec_roundtrip_and_validation():
    spec = CropSpec(size=224, eye_distance=0.3, eye_y=0.4, margin=0.1)
    d = spec.to_dict()
    assert d == {"size": 224, "eye_distance": 0.3, "eye_y": 0.4, "margin": 0.1}
    assert CropSpec.from_dict(d) == spec
    import json

    assert CropSpec.from_dict(json.loads(json.dumps(d))) == spec
    with pytest.raises(ValueError):
        CropSpec(size=3)
    with pytest.raises(ValueError):
        CropSpec.from_dict({"size": 112, "bogus": 1})


def test_eye_angle():
    assert eye_angle(((0, 0), (10, 0))) == 0
    assert eye_angle(((0, 0), (10, 10))) == pytest.approx(45)


@pytest.mark.parametrize("angle", [-30, -10, 0, 20, 30])
def test_align_puts_eyes_where_the_spec_says(angle):
    """Two dots on a canvas: after alignment they sit on a horizontal line at the spec's place."""
    spec = CropSpec(size=100, eye_distance=0.3, eye_y=0.4, margin=0.25)
    img = np.full((300, 400, 3), 90, np.uint8)
    cx, cy, r = 200.0, 150.0, 40.0
    a = math.radians(angle)
    e1 = (cx - r * math.cos(a), cy - r * math.sin(a))
    e2 = (cx + r * math.cos(a), cy + r * math.sin(a))
    for x, y in (e1, e2):
        img[round(y) - 6 : round(y) + 7, round(x) - 6 : round(x) + 7] = 255
    crop = align(img, (e1, e2), spec)
    assert crop.shape == (100, 100, 3) and crop.dtype == np.uint8
    F = spec.face_size
    # pixel-index convention: the crop's continuous centre 50.0 is pixel index 49.5
    want_y = spec.margin * F + spec.eye_y * F - 0.5
    want_dx = spec.eye_distance * F / 2
    m = alignment_matrix((e1, e2), spec)
    p1, p2 = m @ [*e1, 1], m @ [*e2, 1]
    assert p1 == pytest.approx([49.5 - want_dx, want_y], abs=1e-6)
    assert p2 == pytest.approx([49.5 + want_dx, want_y], abs=1e-6)
    ys, xs = np.nonzero(crop[..., 0] > 200)
    left = xs < 50
    assert ys[left].mean() == pytest.approx(want_y, abs=0.7)
    assert ys[~left].mean() == pytest.approx(want_y, abs=0.7)
    assert xs[left].mean() == pytest.approx(49.5 - want_dx, abs=0.7)


def test_align_border_is_edge_replicated_not_black():
    img = np.full((50, 50, 3), 200, np.uint8)
    crop = align(img, ((20, 20), (30, 22)), CropSpec(size=64, eye_distance=0.1))
    assert crop.min() == 200  # the crop reaches far beyond the image: no black fill


def test_center_crop_and_eye_estimate():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255
    spec = CropSpec(size=50)
    c = center_crop(img, spec)
    assert c.shape == (50, 50, 3) and c.min() == 255
    (x1, y1), (x2, y2) = center_crop_eyes(img.shape, spec)
    assert x1 < 100 < x2 and y1 == y2
    assert (x2 - x1) == pytest.approx(100 * spec.eye_distance, abs=1e-6)


class _Fake:
    def detect(self, image):
        return [
            Detection((0, 0, 10, 10), ((2.0, 4.0), (8.0, 4.0)), 1.0, "fake"),
            Detection((10, 10, 60, 60), ((20.0, 30.0), (45.0, 30.0)), 0.5, "fake"),
        ]


def test_second_backend_via_registry_and_pipeline_sorting():
    register_detector("fake-test")(lambda **kw: _Fake())
    try:
        pipe = FacePipeline("fake-test", CropSpec(size=32))
        faces = pipe.faces(np.zeros((80, 80, 3), np.uint8))
        assert [f.box for f in faces] == [(10, 10, 60, 60), (0, 0, 10, 10)]  # largest first
        assert all(isinstance(f, Face) and f.crop.shape == (32, 32, 3) for f in faces)
        assert len(pipe.faces(np.zeros((80, 80, 3), np.uint8), largest=True)) == 1
        assert len(pipe.faces(np.zeros((80, 80, 3), np.uint8), min_face=20)) == 1
        d = faces[0].to_dict()
        assert d["box"] == [10, 10, 60, 60] and d["eyes"] == [[20.0, 30.0], [45.0, 30.0]]
    finally:
        DETECTORS.pop("fake-test")
    with pytest.raises(ConfigError, match="unknown face detector"):
        get_detector("no-such-backend")


def test_no_face_flat_grey_image_and_fallback():
    pipe = FacePipeline()
    grey = np.full((240, 320, 3), 128, np.uint8)
    assert pipe.faces(grey) == []
    (face,) = pipe.faces(grey, fallback=True)
    assert face.fallback and face.detector == "center-crop"
    assert face.box == (0, 0, 320, 240)
    assert face.crop.shape == (112, 112, 3)


def test_detections_are_plain_data():
    pytest.importorskip("dlib")
    img = np.full((100, 100), 128, np.uint8)  # greyscale input accepted
    assert get_detector().detect(img) == []


def _fgnet_face():
    if not FGNET.is_dir():
        pytest.skip("shared data (../shared/data/fgnet) not present")
    from faceage.core.imageio import load_image

    return load_image(FGNET / "002A07.JPG")


def test_real_face_detected_plain_types():
    img = _fgnet_face()
    (f,) = FacePipeline().faces(img, largest=True)
    assert all(isinstance(v, int) for v in f.box)
    assert all(isinstance(c, float) for e in f.eyes for c in e)
    assert f.eyes[0][0] < f.eyes[1][0]
    assert f.crop.shape == (112, 112, 3) and f.crop.dtype == np.uint8


def test_aligner_recovers_known_rotations_of_a_real_face():
    """A real face rotated by known angles and pasted on a larger background:
    the detected eye line follows the rotation within 3 degrees."""
    img = _fgnet_face()
    pipe = FacePipeline()
    (base,) = pipe.faces(img, largest=True)
    base_angle = eye_angle(base.eyes)
    rng = np.random.default_rng(1)
    for deg in (-30, -15, 10, 25):
        rot = Image.fromarray(img).rotate(deg, resample=Image.BILINEAR, expand=True, fillcolor=(110, 120, 100))
        bg = rng.integers(60, 140, (rot.height + 120, rot.width + 160, 3), dtype=np.uint8)
        canvas = Image.fromarray(bg)
        canvas.paste(rot, (97, 41))
        faces = pipe.faces(np.asarray(canvas), largest=True)
        assert faces, f"no face at {deg} deg"
        got = eye_angle(faces[0].eyes)
        # PIL rotates counter-clockwise on screen; in image coords (y down) the eye line angle drops by deg
        assert got == pytest.approx(base_angle - deg, abs=3.0), (deg, faces[0].detector)
        assert abs(eye_angle(tuple(tuple(alignment_matrix(faces[0].eyes, pipe.spec) @ [*e, 1]) for e in faces[0].eyes))) < 1e-6
