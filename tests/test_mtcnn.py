"""The ``mtcnn`` detector (the default): its shipped networks, its faces against dlib's on the test photos,
its sampling and chunking, and the rule that an unsure MTCNN face needs dlib's HOG to agree."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceage.core.imageio import load_image
from faceage.face import mtcnn_detector as md
from faceage.face.detect import DEFAULT_DETECTOR, get_detector
from faceage.face.pipeline import FacePipeline

DATA = Path(__file__).resolve().parent / "data"


def test_the_shipped_networks_are_the_listed_files():
    sums = (md.MODELS / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split("  ")) for line in sums if line)
    assert sorted(listed) == ["onet.onnx", "pnet.onnx", "rnet.onnx"]
    for name, digest in listed.items():
        assert hashlib.sha256((md.MODELS / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (md.MODELS / "NOTICE").read_text()


def test_it_is_the_default_and_finds_dlibs_faces_on_the_test_photos():
    """The two adults of obama_and_biden.jpg (800 px, so MTCNN's path) get dlib's own eyes to a pixel;
    every photo the faces dlib finds, and no others (MTCNN's unsure false face at the bottom left is
    dropped: HOG does not find it)."""
    assert DEFAULT_DETECTOR == "mtcnn"
    mtcnn, dlib = FacePipeline("mtcnn"), FacePipeline("dlib")
    for name in ("obama.jpg", "biden.jpg", "obama_and_biden.jpg"):
        ours, theirs = mtcnn.faces(DATA / name), dlib.faces(DATA / name)
        assert len(ours) == len(theirs), name
        assert {f.detector for f in ours} == {"mtcnn"}
    ours = sorted(mtcnn.faces(DATA / "obama_and_biden.jpg"), key=lambda f: f.box[0])[:2]
    theirs = sorted(dlib.faces(DATA / "obama_and_biden.jpg"), key=lambda f: f.box[0])[:2]
    for a, b in zip(ours, theirs):
        assert np.abs(np.subtract(a.eyes, b.eyes)).max() <= 1.0
        assert abs(a.score - b.score) < 0.3  # HOG's score on the face's region: what video weighs frames by


def test_small_images_take_dlibs_passes_unchanged():
    """Working images up to ``small_side`` (face crops, portraits: every validation set) are detected by
    dlib's passes, so the crops the models were measured on do not move."""
    img = load_image(DATA / "biden.jpg")
    small = np.asarray(Image.fromarray(img).resize((176, 400)))
    a, b = get_detector("mtcnn").detect(small), get_detector("dlib").detect(small)
    assert [(d.box, d.eyes, d.detector) for d in a] == [(d.box, d.eyes, d.detector) for d in b]
    assert a and a[0].detector.startswith("hog")


def test_patches_sample_the_boxes_bilinearly():
    """A box covering the image at the image's own size gives the image back (normalised); a box
    half outside repeats the edge pixels."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = md._patches(img, np.array([[0.0, 0.0, 23.0, 23.0]]), 24)
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), (img - 127.5) * 0.0078125, atol=1e-5)
    edge = md._patches(img, np.array([[-24.0, 0.0, -1.0, 23.0]]), 24)[0].transpose(1, 2, 0)
    np.testing.assert_allclose(edge, np.repeat((img[:, :1] - 127.5) * 0.0078125, 24, axis=1), atol=1e-5)


def test_chunked_scoring_gives_the_same_faces(monkeypatch):
    img = load_image(DATA / "obama_and_biden.jpg")
    det = md.MtcnnDetector()
    want = det.mtcnn(img, 20)
    monkeypatch.setattr(md, "CHUNK", 3)
    got = det.mtcnn(img, 20)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    np.testing.assert_allclose(got[1], want[1], atol=1e-3)


def test_an_unsure_face_needs_hog(monkeypatch):
    """Where HOG finds nothing on a face's region, the face is kept only if MTCNN is at least ``confirm``
    sure, on a box placed from MTCNN's."""
    img = load_image(DATA / "obama_and_biden.jpg")
    monkeypatch.setattr(md, "_hog_box", lambda image, box: None)
    assert md.MtcnnDetector(confirm=0.999999)._boxes(img) == []
    placed = md.MtcnnDetector(confirm=0.5)._boxes(img)
    assert len(placed) == 4  # the false face included, as MTCNN alone gives


def test_nothing_found_falls_back_to_dlib(monkeypatch):
    """A large photo where MTCNN finds nothing gets dlib's passes (recovery included) on the working image."""
    img = load_image(DATA / "obama.jpg")
    det = md.MtcnnDetector(max_side=800)
    monkeypatch.setattr(md.MtcnnDetector, "_boxes", lambda self, image: [])
    faces = det.detect(img)
    assert len(faces) == 1 and faces[0].detector.startswith("hog")
    assert md.MtcnnDetector(max_side=800, recover=False).detect(img) == []


def test_options_are_checked():
    from faceage.errors import ConfigError

    for bad in ({"thresholds": (0.6, 0.7)}, {"factor": 0.95}, {"min_face": 0}, {"max_side": 20}):
        with pytest.raises(ConfigError):
            md.MtcnnDetector(**bad)
    with pytest.raises(ConfigError, match="did you mean min_face"):
        get_detector("mtcnn", min_faces=0.1)


def test_a_server_loads_the_networks_at_start(monkeypatch):
    """The warm-up's small photo takes dlib's passes; the server loads MTCNN's networks too, so the first
    large photo does not pay for them."""
    pytest.importorskip("fastapi")
    from faceage.serve.app import create_app

    monkeypatch.setattr(md._Nets, "_sessions", None)
    create_app(warmup=True)
    assert md._Nets._sessions is not None and sorted(md._Nets._sessions) == ["onet", "pnet", "rnet"]


def test_video_frames_get_the_same_dlib_passes_with_either_detector():
    """Frames up to ``small_side`` go to mtcnn's dlib passes: video's settings reach them as they reach ``dlib``
    (no quick close-up pass, no recovery), so a large face never hides the small ones around it."""
    from faceage.video.pipeline import VIDEO_DETECTOR_OPTIONS

    for side in (640, 800):
        ours = get_detector("mtcnn", **VIDEO_DETECTOR_OPTIONS["mtcnn"](side))._dlib
        theirs = get_detector("dlib", **VIDEO_DETECTOR_OPTIONS["dlib"](side))
        assert (ours.fast_face, ours.recover, ours.use_cnn) == (theirs.fast_face, theirs.recover, theirs.use_cnn) \
            == (0.0, False, False)
    assert get_detector("mtcnn")._dlib.fast_face == get_detector("dlib").fast_face  # None: dlib's own default
