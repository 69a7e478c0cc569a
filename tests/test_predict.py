import json
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import fgnet_images
from faceage.cli import main
from faceage.errors import ImageError
from faceage.estimator import AgeEstimator, FaceAge


@pytest.fixture(scope="module")
def estimator(small_model):
    return AgeEstimator(small_model)


def test_predict_real_photo_returns_typed_faces(estimator):
    path = fgnet_images(1)[0]
    faces = estimator.predict(path)
    assert len(faces) >= 1 and isinstance(faces[0], FaceAge)
    f = faces[0]
    w, h = Image.open(path).size
    left, top, right, bottom = f.box
    assert 0 <= left < right <= w + 5 and 0 <= top < bottom <= h + 5
    (lx, ly), (rx, ry) = f.eyes
    assert left <= lx < rx <= right and top <= ly <= bottom
    assert 0 <= f.age_interval[0] <= f.age <= f.age_interval[1] <= 100
    assert round(f.age, 1) == f.age
    assert set(f.to_dict()) == {"box", "eyes", "age", "age_interval", "score", "fallback"}


def test_one_photo_result_speaks_for_every_entry_point(estimator, tmp_path):
    """analyse's PhotoResult gives predict's faces, the JSON line, the text lines, the output rows and the HTTP
    answer from one analysis; its size is the photo's full size even where a large JPEG is decoded reduced;
    without its crops it is small enough to send between processes."""
    import pickle

    from faceage.core.options import FaceOptions
    from faceage.models import locate
    from faceage.checks.policy import policy_for
    from faceage.models.weights import read_record

    big = tmp_path / "big.jpg"
    img = Image.open("tests/data/obama_and_biden.jpg").convert("RGB")
    img.resize((img.width * 4, img.height * 4)).save(big, quality=90)
    result = estimator.analyse(big, FaceOptions())
    assert result.size == (img.width * 4, img.height * 4)
    faces = estimator.predict(big)
    assert result.ages() == faces and len(faces) >= 2
    assert result.to_json("p.jpg") == {"path": "p.jpg", "faces": [f.to_dict() for f in faces]}
    assert [line for line, _ in result.lines("p.jpg")] == [f"p.jpg: {f.line()}" for f in faces]
    f = faces[0]  # the command line's text, as it has always read
    assert result.lines("p.jpg")[0] == (f"p.jpg: box {list(f.box)} age {f.age:.1f} (80% interval "
                                        f"{f.age_interval[0]:.0f}-{f.age_interval[1]:.0f})", False)
    assert [r["age"] for r in result.rows("p.jpg")] == [f.age for f in faces]
    answer = result.response("fast", 12.345)
    assert answer == {"faces": [f.to_dict() for f in faces], "width": img.width * 4, "height": img.height * 4,
                      "model": "fast", "elapsed_ms": 12.35}
    policy = policy_for(read_record(locate("fast", "torch")), 18)  # the bundled model's, on this model's scores
    checked = result.response("fast", 1.0, policy)
    assert checked["policy"] == policy.summary() and [c["age"] for c in checked["faces"]] == [f.age for f in faces]
    assert result.to_json("p.jpg", policy)["over"] == 18
    light = result.without_crops()
    assert light.ages() == faces and all(f.crop is None for f in light.faces)
    assert len(pickle.dumps(light)) < len(pickle.dumps(result)) / 5
    empty = estimator.analyse(np.full((64, 64, 3), 127, np.uint8))
    assert empty.lines("x") == [("x: no face found", False)] and empty.rows("x")[0]["face"] is None


def test_the_command_line_loads_the_model_only_in_its_worker(monkeypatch, capsys):
    """faceage predict checks the model and options in the main process from the record alone (no network
    loaded there: here the main process cannot load one) and the worker process loads it, once; a bad model is
    still one error before any file."""
    from faceage.runtime import onnx_backend

    def refuse(*args, **kwargs):
        raise AssertionError("the main process loaded the network")

    monkeypatch.setattr(onnx_backend.OnnxBackend, "__init__", refuse)
    assert main(["predict", "tests/data/biden.jpg", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"][0]["age"] > 0
    assert main(["predict", "tests/data/biden.jpg", "--model", "fsat"]) == 4  # a model that cannot be used
    assert "did you mean fast?" in capsys.readouterr().err


def test_a_model_only_the_worker_can_find_damaged_is_one_error_not_a_crash_per_file(small_model, tmp_path, capsys):
    """Damaged weights pass the main process's record check (it does not read the weights); the worker then
    cannot load the model: the run ends with that one error (exit 4), in predict and in batch mode, never as a
    worker crash on every file."""
    from faceage.batch import run_batch
    from faceage.errors import WeightsError

    data = bytearray(small_model.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    photos = ["tests/data/biden.jpg", "tests/data/obama.jpg"]
    assert main(["predict", *photos, "--model", str(bad)]) == 4
    out = capsys.readouterr()
    assert "the weights do not match" in out.err and "worker process died" not in out.err + out.out
    from faceage.engine import PredictOptions

    with pytest.raises(WeightsError, match="the weights do not match"):
        run_batch(photos, tmp_path / "rows.csv", options=PredictOptions(model=str(bad)), workers=1, progress=False)
    for backend, model, message in (("onnx", small_model, "--backend onnx needs an ONNX file"),
                                    ("torch", "src/faceage/models/fast.onnx", "--backend torch needs a .safetensors")):
        with pytest.raises(WeightsError, match=message):  # refused before any file, as the worker would refuse it
            PredictOptions(model=str(model), backend=backend).check()


def test_inputs_path_pil_array_agree(estimator):
    path = fgnet_images(1)[0]
    a = estimator.predict(path)[0].age
    b = estimator.predict(Image.open(path))[0].age
    c = estimator.predict(np.asarray(Image.open(path).convert("RGB")))[0].age
    assert a == b == c


def test_no_face_is_empty_or_fallback(estimator):
    grey = np.full((200, 200, 3), 128, np.uint8)
    assert estimator.predict(grey) == []
    faces = estimator.predict(grey, fallback=True)
    assert len(faces) == 1 and faces[0].fallback and faces[0].box == (0, 0, 200, 200)


def test_bad_file_is_a_clear_error(estimator, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    with pytest.raises(ImageError, match="notes.jpg"):
        estimator.predict(bad)


def test_predict_aligned_batches(estimator):
    crops = np.random.default_rng(0).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    batch = estimator.predict_aligned(crops)
    single = [estimator.predict_aligned(crops[i : i + 1])[0] for i in range(5)]
    assert [round(e.age, 1) for e in batch] == [round(e.age, 1) for e in single]
    assert batch[0].distribution.shape == (101,) and abs(batch[0].distribution.sum() - 1) < 1e-6
    assert estimator.predict_aligned([]) == []
    other_size = estimator.predict_aligned([crops[0][:80, :80]])  # resized to the model's input
    assert len(other_size) == 1


def test_thread_safe_concurrent_predict(estimator):
    paths = fgnet_images(3)
    expected = {p: [f.age for f in estimator.predict(p)] for p in paths}
    results, errors = [], []

    def work(p):
        try:
            results.append((p, [f.age for f in estimator.predict(p)]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 9
    assert all(ages == expected[p] for p, ages in results)


def test_cli_json_schema_and_errors(small_model, tmp_path, capsys):
    photo = fgnet_images(1)[0]
    (tmp_path / "in").mkdir()
    Image.open(photo).save(tmp_path / "in" / "face.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "in" / "blank.webp")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xffjunk")
    code = main(["predict", str(tmp_path / "in"), "--json", "--model", str(small_model),
                 "--annotate", str(tmp_path / "ann")])
    assert code == 1  # one file could not be read
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["path"].rsplit("/", 1)[-1]: line for line in lines}
    assert set(by_name) == {"face.png", "blank.webp", "broken.jpg"}
    assert by_name["blank.webp"]["faces"] == []
    assert "error" in by_name["broken.jpg"] and "broken.jpg" in by_name["broken.jpg"]["error"]
    face = by_name["face.png"]["faces"][0]
    assert len(face["box"]) == 4 and len(face["eyes"]) == 2 and len(face["age_interval"]) == 2
    assert (tmp_path / "ann" / "face.png").is_file()


def test_cli_text_output(small_model, capsys):
    photo = fgnet_images(1)[0]
    assert main(["predict", str(photo), "--model", str(small_model), "--largest"]) == 0
    out = capsys.readouterr().out
    assert str(photo) in out and "age" in out and "80% interval" in out


def test_predict_aligned_single_crop_and_bad_dtype(estimator):
    crop = np.random.default_rng(1).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert estimator.predict_aligned(crop)[0].age == estimator.predict_aligned(crop[None])[0].age
    grey = estimator.predict_aligned([crop[:, :, 0]])  # greyscale crops are expanded to RGB
    assert len(grey) == 1
    with pytest.raises(ImageError):
        estimator.predict_aligned([crop.astype(np.float32) / 255])  # never silently cast to uint8


def test_unknown_backend_is_a_clear_error(small_model):
    from faceage.errors import WeightsError

    with pytest.raises(WeightsError, match="unknown backend"):
        AgeEstimator(small_model, backend="onnxx")


def test_annotate_never_overwrites(small_model, tmp_path):
    photo = fgnet_images(1)[0]
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.open(photo).save(tmp_path / sub / "face.png")
    before = (tmp_path / "a" / "face.png").read_bytes()
    assert main(["predict", "-r", str(tmp_path), "--model", str(small_model), "--annotate", str(tmp_path)]) == 0
    # the layout under the input folder is kept, and the inputs a/face.png and b/face.png are left alone
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert names == ["a/face-1.png", "a/face.png", "b/face-1.png", "b/face.png"]
    assert (tmp_path / "a" / "face.png").read_bytes() == before


def test_annotate_keeps_format_and_layout_and_stdin(small_model, tmp_path, monkeypatch, capsys):
    import io

    photo = fgnet_images(1)[0]
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.open(photo).save(tmp_path / "in" / "sub" / "face.webp")
    Image.open(photo).convert("RGB").save(tmp_path / "in" / "face.jpeg")
    assert main(["predict", "-r", str(tmp_path / "in"), "--model", str(small_model), "--annotate",
                 str(tmp_path / "out"), "--quiet"]) == 0
    assert Image.open(tmp_path / "out" / "sub" / "face.webp").format == "WEBP"
    assert Image.open(tmp_path / "out" / "face.jpeg").format == "JPEG"
    assert capsys.readouterr().err == ""

    # "-": one image from standard input, reported as path "-", annotated in its own format
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "in" / "face.jpeg").read_bytes())))
    assert main(["predict", "-", "--json", "--model", str(small_model), "--annotate", str(tmp_path / "out2")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["path"] == "-" and len(line["faces"]) == 1
    assert Image.open(tmp_path / "out2" / "stdin.jpg").format == "JPEG"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"not a photo")))
    assert main(["predict", "-", "--model", str(small_model)]) == 5  # the only image given: exit status 5
    assert "-: error:" in capsys.readouterr().err
    assert main(["predict", "-", str(photo)]) == 2


def test_bundled_model_predicts_without_importing_torch(tmp_path):
    import subprocess
    import sys

    photo = fgnet_images(1)[0]
    code = (
        "import sys, json\n"
        "from faceage.cli import main\n"
        f"rc = main(['predict', {str(photo)!r}, '--json'])\n"
        "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    face = json.loads(r.stdout.splitlines()[-1])["faces"][0]
    assert 0 < face["age"] < 100


def test_cli_goes_on_past_every_kind_of_bad_file(tmp_path, capsys):
    """A missing path given first, a dangling link, an EPS named .jpg and thin images (which crashed
    detection, natively in dlib's CNN pass) are each that file's error or [], and the photo after them
    is still estimated (bundled ONNX model: its worker processes start without PyTorch)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (w, h) in enumerate([(8, 2000), (10, 10000), (4300, 8)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"a_thin{i}.png")
    (folder / "b_eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (folder / "c_dangling.png").symlink_to(tmp_path / "nowhere.png")
    Image.open(fgnet_images(1)[0]).save(folder / "z_face.png")
    code = main(["predict", str(tmp_path / "missing.jpg"), str(folder), "--json"])
    assert code == 1
    lines = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in
             capsys.readouterr().out.splitlines()}
    assert set(lines) == {"missing.jpg", "a_thin0.png", "a_thin1.png", "a_thin2.png", "b_eps.jpg",
                          "c_dangling.png", "z_face.png"}
    assert "no such file" in lines["missing.jpg"]["error"]
    assert "dangling symbolic link" in lines["c_dangling.png"]["error"]
    assert "PostScript/EPS files are not supported" in lines["b_eps.jpg"]["error"]
    for i in range(3):
        assert lines[f"a_thin{i}.png"].get("faces", []) == []  # an error (today) or no face (fixed detection)
    assert len(lines["z_face.png"]["faces"]) >= 1


def test_a_dead_worker_fails_only_its_job():
    """The isolation under predict and prepare: SIGABRT in a worker (as dlib's heap corruption gave)."""
    from faceage.workers import imap_isolated

    expected = [0, 1, 2, ("crash", 3), 4, 5, 6, ("crash", 7)]
    for workers in (1, 2):
        out = list(imap_isolated(_abort_on_odd_tens, range(8), workers=workers, on_crash=lambda job: ("crash", job)))
        in_order = out if workers == 1 else sorted(out, key=lambda r: r[1] if isinstance(r, tuple) else r)
        assert in_order == expected


def _abort_on_odd_tens(job: int) -> int:
    import os

    if job in (3, 7):
        os.abort()
    return job


def test_a_suspect_worker_is_replaced():
    """After a result marked suspect (a native library raised, the heap may be damaged) no further job
    runs in that worker process."""
    from faceage.workers import imap_isolated

    pids = list(imap_isolated(_pid, range(4), on_crash=lambda job: None, suspect=lambda r: r[0] == 1))
    assert pids[0][1] == pids[1][1] != pids[2][1] == pids[3][1]


def _pid(job: int) -> tuple[int, int]:
    import os

    return job, os.getpid()
