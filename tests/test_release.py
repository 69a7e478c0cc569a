"""What a user of the package sees first: the version, the public names, readable results."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

import faceage
from faceage import AgeEstimate

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "faceage.__version__"}
    r = subprocess.run([sys.executable, "-m", "faceage", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"faceage {faceage.__version__}"
    assert f"## [{faceage.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_served_model_summary_reports_the_version():
    from faceage.serve.app import model_page, model_summary

    summary = model_summary(faceage.AgeEstimator(), "fast.onnx")
    assert summary["faceage_version"] == faceage.__version__
    page = model_page(summary)
    assert "<table" in page and faceage.__version__ in page and "non-commercial" in page


def test_dir_lists_the_lazy_public_names():
    names = dir(faceage)
    assert set(faceage.__all__) <= set(names) and "AgeEstimator" in names


def test_age_estimate_repr_leaves_out_the_distribution():
    est = AgeEstimate(41.5, (35.0, 48.0), np.full(101, 1 / 101))
    assert repr(est) == "AgeEstimate(age=41.5, age_interval=(35.0, 48.0), error=None)"
    assert est.distribution.shape == (101,)


def test_annotate_gives_an_image_a_notebook_displays():
    est = faceage.AgeEstimator()
    photo = ROOT / "tests" / "data" / "obama.jpg"
    img = est.annotate(photo)
    assert img.size == (640, 800) and img.mode == "RGB"
    assert img._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    again = est.annotate(photo, est.predict(photo))  # faces from an earlier predict draw the same
    assert np.array_equal(np.asarray(img), np.asarray(again))


def test_the_package_ships_its_typing_marker_licences_and_dlib_models():
    from faceage.face.dlib_detector import DLIB_MODELS

    assert (ROOT / "src" / "faceage" / "py.typed").is_file()
    assert {p.name for p in DLIB_MODELS.glob("*.dat")} == {"shape_predictor_5_face_landmarks.dat",
                                                           "mmod_human_face_detector.dat"}
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "NON-COMMERCIAL" in (ROOT / "MODEL_LICENSE").read_text()
    assert '"models/SHA256SUMS"' in (ROOT / "pyproject.toml").read_text()  # the bundled files' pins ship too
