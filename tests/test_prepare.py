import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceage.data.prepare import prepare
from faceage.face.align import CropSpec
from faceage.face.detect import Detection


class _BrightFaces:
    """Test backend: a 'face' in every image whose mean is above 100, none otherwise."""

    def detect(self, image):
        if image.mean() <= 100:
            return []
        h, w = image.shape[:2]
        return [Detection((w // 4, h // 4, 3 * w // 4, 3 * h // 4), ((w * 0.4, h * 0.45), (w * 0.6, h * 0.45)), 1.0, "fake")]


class _AbortsOnThin(_BrightFaces):
    """Test backend that dies like dlib's CNN pass on thin images did (SIGABRT, heap corruption)."""

    def detect(self, image):
        h, w = image.shape[:2]
        if max(h, w) > 50 * min(h, w):
            os.abort()
        return super().detect(image)


@pytest.fixture
def fake_detector():
    """A picklable detector object: prepare's worker processes are spawned and get it by pickling."""
    return _BrightFaces()


def _img(path: Path, value: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(value, 10, (60, 50, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def utk(tmp_path):
    src = tmp_path / "utk"
    _img(src / "20_0_0_20170101000000001.jpg.chip.jpg", 180, 1)
    _img(src / "30_1_0_20170101000000002.jpg.chip.jpg", 170, 2)
    dup = _img(src / "40_1_1_20170101000000003.jpg.chip.jpg", 160, 3)
    (src / "44_1_1_20170101000000004.jpg.chip.jpg").write_bytes(dup.read_bytes())  # same bytes, other age
    _img(src / "50_0_0_20170101000000005.jpg.chip.jpg", 20, 5)  # dark: no face
    (src / "60_0_0_20170101000000006.jpg.chip.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "badname.jpg").write_bytes(b"x")
    return src


def test_prepare_reports_resumes_and_is_idempotent(tmp_path, utk, fake_detector):
    out = tmp_path / "out"
    spec = CropSpec(size=32)
    r = prepare("utkface", utk, out, spec=spec, workers=1, detector=fake_detector, progress=False)
    assert r["faces_found"] == 4 and r["in_manifest"] == 4
    assert len(r["no_face"]) == 1 and "50_0_0" in r["no_face"][0]
    assert len(r["unreadable"]) == 1 and "60_0_0" in r["unreadable"][0]["file"]
    assert "60_0_0" in r["unreadable"][0]["error"]
    assert len(r["label_problems"]) == 1
    assert r["duplicate_groups"] == 1 and r["duplicate_groups_conflicting_ages"] == 1
    assert r["conflicts"][0]["ages"] == [40, 44]

    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 4 and set(rows[0]) >= {"path", "age", "subject", "source", "detector", "fallback"}
    assert all((out / row["path"]).is_file() and row["detector"] == "fake" and row["fallback"] == "0" for row in rows)
    crop = np.asarray(Image.open(out / rows[0]["path"]))
    assert crop.shape == (32, 32, 3)
    dups = [row for row in rows if row["age"] in ("40", "44")]
    assert dups[0]["subject"] == dups[1]["subject"] and dups[0]["subject"].startswith("dup-")
    assert json.loads((out / "prepare.json").read_text())["crop_spec"] == spec.to_dict()
    for name in ("report.json", "report.md", "age_histogram.png", "results.jsonl"):
        assert (out / name).is_file()
    assert "conflicting" in (out / "report.md").read_text()

    # second run: nothing to do except the unreadable file, same outcome
    before = (out / "manifest.csv").read_text()
    r2 = prepare("utkface", utk, out, spec=spec, workers=1, detector=fake_detector, progress=False)
    assert r2["skipped_already_done"] == 5 and r2["processed_this_run"] == 1
    assert (out / "manifest.csv").read_text() == before

    # a deleted crop is redone
    (out / rows[0]["path"]).unlink()
    r3 = prepare("utkface", utk, out, spec=spec, workers=1, detector=fake_detector, progress=False)
    assert r3["processed_this_run"] == 2 and (out / rows[0]["path"]).is_file()

    # fallback now on: the face-less image gets a centre crop marked fallback
    r4 = prepare("utkface", utk, out, spec=spec, workers=1, detector=fake_detector, fallback=True, progress=False)
    assert r4["fallback_crops"] == 1 and r4["in_manifest"] == 5
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [row["detector"] for row in rows if row["fallback"] == "1"] == ["center-crop"]

    # a different crop spec for the same folder is refused
    from faceage.errors import FaceageError

    with pytest.raises(FaceageError, match="different settings"):
        prepare("utkface", utk, out, spec=CropSpec(size=64), workers=1, detector=fake_detector, progress=False)


def test_prepare_cli_parallel_real_detector(tmp_path):
    """End to end through the CLI with 2 worker processes and dlib on grey images (no faces)."""
    from faceage.cli import main

    src = tmp_path / "ages"
    _img(src / "7" / "a.png", 128, 1)
    _img(src / "9" / "b.png", 128, 2)
    out = tmp_path / "out"
    rc = main(["prepare", "folder", str(src), str(out), "--size", "48", "--workers", "2", "--fallback", "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(row["age"] for row in rows) == ["7", "9"]
    assert all(row["fallback"] == "1" for row in rows)
    assert main(["prepare", "utkface", str(tmp_path / "missing"), str(out)]) == 3  # ManifestError


def _thin(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


THIN_SHAPES = ((8, 2000), (10, 10000), (4300, 8))


def test_a_worker_that_dies_fails_only_its_file(tmp_path):
    """Three files kill their worker process (SIGABRT); the other twelve are cropped (2 workers; one
    worker: tests/test_predict.py::test_a_dead_worker_fails_only_its_job)."""
    src = tmp_path / "ages"
    for i in range(12):
        _img(src / str(20 + i) / f"good{i}.png", 180, i)
    for i, (w, h) in enumerate(THIN_SHAPES):
        _thin(src / "30" / f"thin{i}.png", w, h, i)
    out = tmp_path / "out"
    r = prepare("folder", src, out, spec=CropSpec(size=32), workers=2, detector=_AbortsOnThin(), progress=False)
    assert r["faces_found"] == 12 and r["in_manifest"] == 12
    assert sorted(u["file"] for u in r["unreadable"]) == [f"30/thin{i}.png" for i in range(3)]
    assert all("worker process died" in u["error"] for u in r["unreadable"])
    assert (out / "report.json").is_file() and "thin2.png" in (out / "report.md").read_text()


def test_prepare_thin_images_real_detector_two_workers(tmp_path):
    """faceage prepare, real dlib detector, 2 workers: 12 FG-NET faces and 3 thin images. The thin ones
    are failures or face-less (once detection handles them), never a crash or a hang."""
    from conftest import fgnet_images
    from faceage.cli import main

    src = tmp_path / "ages"
    for i, photo in enumerate(fgnet_images(12)):
        dst = src / str(10 + i) / photo.name
        dst.parent.mkdir(parents=True)
        dst.write_bytes(photo.read_bytes())
    for i, (w, h) in enumerate(THIN_SHAPES):
        _thin(src / "40" / f"thin{i}.png", w, h, i)
    out = tmp_path / "out"
    assert main(["prepare", "folder", str(src), str(out), "--workers", "2", "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["faces_found"] == 12
    skipped = sorted([u["file"] for u in r["unreadable"]] + r["no_face"])
    assert skipped == [f"40/thin{i}.png" for i in range(3)]
