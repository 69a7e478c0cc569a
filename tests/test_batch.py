"""Local batch mode: the same answers as ``faceage predict --json``, resumable after a kill, errors as rows."""
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batch_data import as_json_records, make_photo_folder, predict_json
from faceage.batch import PredictOptions, run_batch
from faceage.batch.files import walk_images
from faceage.batch.output import OutputLock, PartStore, read_rows
from faceage.cli import main
from faceage.errors import FaceageError
from faceage.core.walk import iter_images

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_batch_gives_predict_json_answers(batch_photos, batch_expected, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"ages{suffix}"
    assert main(["predict", "-r", str(batch_photos), "--workers", "2", "--output", str(out)]) == 1  # some files are bad
    rows = list(read_rows(out))
    assert as_json_records(rows) == batch_expected
    assert list(dict.fromkeys(r["path"] for r in rows)) == list(batch_expected)  # predict's order
    by_name = {Path(r["path"]).name: r for r in rows}
    assert "not a recognised image" in by_name["notes.jpg"]["error"]
    assert by_name["grey.png"]["face"] is None and by_name["grey.png"]["error"] is None
    assert sum(Path(r["path"]).name == "obama_and_biden.jpg" for r in rows) == 3
    assert not out.with_name(out.name + ".parts").exists()


def test_quiet_batch_prints_nothing(batch_photos, tmp_path, capsys):
    """--quiet in batch mode: no progress bar, no summary; the exit status still says a file failed."""
    out = tmp_path / "q.csv"
    assert main(["predict", "-r", str(batch_photos), "--workers", "1", "--output", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert out.is_file()


def _copies(root: Path, n: int) -> Path:
    """``n`` copies of the photo folder's files side by side in ``root/many`` (a longer run)."""
    photos = make_photo_folder(root / "photos")
    many = root / "many"
    many.mkdir()
    for i in range(n):
        for p in photos.iterdir():
            if p.is_file():
                shutil.copy(p, many / f"{i}-{p.name}")
    return many


def _batch_process(folder: Path, out: Path, chunk_size: int, **popen) -> subprocess.Popen:
    """A batch run of ``folder`` into ``out`` in a process of its own (one worker, no progress bar)."""
    code = (f"from faceage.batch import run_batch; run_batch([{str(folder)!r}], {str(out)!r}, workers=1, "
            f"chunk_size={chunk_size}, progress=False)")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)}, **popen)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path):
    many = _copies(tmp_path, 3)
    out = tmp_path / "ages.jsonl"
    parts = tmp_path / "ages.jsonl.parts"
    proc = _batch_process(many, out, 2, start_new_session=True)
    try:
        while len(list(parts.glob("part-*"))) < 2:  # two chunks (four images) written
            assert proc.poll() is None, "the first run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, mid-way
        proc.wait()
    assert not out.exists()
    done = {r["path"] for p in parts.glob("part-*") for r in read_rows(p)}
    total = len(list(walk_images([many])))
    assert 4 <= len(done) < total

    report = run_batch([many], out, workers=2, progress=False)
    assert report.skipped == len(done) and report.images == total - len(done)
    rows = list(read_rows(out))
    assert {r["path"] for r in rows} == {str(p) for p in walk_images([many])}
    assert max(Counter((r["path"], r["face"]) for r in rows).values()) == 1
    ages = {}
    for r in rows:  # the three copies of a photo, scored in either run, agree
        ages.setdefault((Path(r["path"]).name.split("-", 1)[1], r["face"]), set()).add(r["age"])
    assert len(ages) == 9 and all(len(a) == 1 for a in ages.values())
    assert report.errors == 3 * 3 - sum(r["error"] is not None for r in rows if r["path"] in done)
    assert not parts.exists()


def test_rerun_adds_only_new_images(batch_photos, tmp_path):
    work = tmp_path / "photos"
    shutil.copytree(batch_photos, work)
    out = tmp_path / "ages.csv"
    first = run_batch([work], out, workers=1, progress=False)
    shutil.copy(work / "obama.jpg", work / "obama-again.jpg")
    second = run_batch([work], out, workers=1, progress=False)
    assert (second.skipped, second.images, second.faces) == (first.images, 1, 1)
    rows = list(read_rows(out))
    assert len(rows) == first.rows + 1 == second.rows
    assert [r["age"] for r in rows if r["path"].endswith("obama-again.jpg")] == \
        [r["age"] for r in rows if r["path"].endswith("/obama.jpg")]


def test_merge_keeps_each_image_once(tmp_path):
    """A run killed after writing the merged output but before removing its parts must not duplicate rows."""
    out = tmp_path / "ages.jsonl"
    store = PartStore(out, {})
    store.add([{"path": "a.jpg", "face": 0, "age": 30.0}, {"path": "b.jpg", "face": None, "age": None}])
    store.finish()
    store = PartStore(out, {})
    store.add([{"path": "b.jpg", "face": None, "age": None}, {"path": "c.jpg", "face": 0, "age": 5.0}])
    assert store.done() == {"a.jpg", "b.jpg", "c.jpg"}
    assert store.finish() == 3
    assert [r["path"] for r in read_rows(out)] == ["a.jpg", "b.jpg", "c.jpg"]


def test_unfinished_run_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "ages.jsonl"
    PartStore(out, {"tta": "zoomflip"})
    with pytest.raises(FaceageError, match="other settings \\(tta\\)"):
        PartStore(out, {"tta": "none"})


def test_walk_images_streams_in_predict_order(tmp_path):
    for rel in ("b/z.jpg", "b/a/y.png", "a.jpg", "b.JPG", "c/.hidden.jpg", "c/notes.txt", ".git/x.jpg", "d/e/f.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    for recursive in (False, True):
        assert list(walk_images([tmp_path], recursive)) == list(iter_images([tmp_path], recursive))
    assert len(list(walk_images([tmp_path], True))) == 6
    it = walk_images([tmp_path / "b", tmp_path / "nothing-here"])
    assert next(it).name == "z.jpg"
    with pytest.raises(FaceageError, match="no such file"):
        list(it)


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers needs --output"),
    (["--output", "ages.xlsx"], "name the file .parquet, .csv or .jsonl"),
    (["--output", "ages.csv", "--json"], "--json cannot be combined with --output"),
    (["--output", "ages.csv", "--workers", "0"], "give 1 or more processes"),
])
def test_batch_option_errors(batch_photos, tmp_path, capsys, args, message):
    assert main(["predict", str(batch_photos), *[str(tmp_path / a) if a.startswith("ages") else a for a in args]]) == 2
    assert message in capsys.readouterr().err


def test_no_image_is_an_error_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["predict", str(tmp_path / "in"), "--output", str(tmp_path / "ages.csv")]) == 2
    assert "no image found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_options_reach_the_workers(batch_photos, tmp_path):
    out = tmp_path / "ages.jsonl"
    inputs = [str(batch_photos / "obama_and_biden.jpg"), str(batch_photos / "grey.png")]
    run_batch(inputs, out, workers=1, progress=False, options=PredictOptions(largest=True, fallback=True))
    rows = list(read_rows(out))
    assert as_json_records(rows) == predict_json(*inputs, "--largest", "--fallback")
    assert [r["fallback"] for r in rows] == [False, True]


# ----------------------------------------------------------------------------- dead workers, dead parents
TESTS = Path(__file__).resolve().parent


def _crash_folder(root: Path) -> Path:
    """Photos, a face-less image, and red.png, on which the test detector kills its worker with SIGKILL."""
    root.mkdir()
    for i in range(3):
        for name in ("obama.jpg", "biden.jpg"):
            shutil.copy(TESTS / "data" / name, root / f"{i}-{name}")
    from PIL import Image
    import numpy as np

    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(root / "grey.png")
    red = np.zeros((80, 80, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(root / "m-red.png")
    return root


def _batch(folder: Path, out: Path, log: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "faceage", "predict", str(folder), "--workers", "2", "--output", str(out),
           "--detector", "crash_detector:CrashOnRed", "--detector-option", f"log={log}", *extra]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"}, capture_output=True,
                          text=True, timeout=300)


def test_a_worker_killed_mid_run_is_an_error_row_and_never_retried_unasked(tmp_path):
    """kill -9 of a worker (by the test detector, on m-red.png): the run finishes, every other photo is
    there once, the killed one is an error row (worker_crashed); a rerun duplicates and retries nothing."""
    folder, out, log = _crash_folder(tmp_path / "in"), tmp_path / "ages.jsonl", tmp_path / "red.log"
    first = _batch(folder, out, log)
    assert first.returncode == 1, first.stderr  # some file failed, the rest was processed
    rows = list(read_rows(out))
    paths = sorted(str(p) for p in folder.iterdir())
    assert sorted(r["path"] for r in rows) == paths  # every photo once (the test detector finds no face)
    crashed = [r for r in rows if r["error"] is not None]
    assert [(Path(r["path"]).name, r["code"]) for r in crashed] == [("m-red.png", "worker_crashed")]
    assert "worker process died" in crashed[0]["error"]
    tries = len(log.read_text().split())
    # a dead worker breaks the whole pool: the files in flight are rerun one at a time to find the culprit, so
    # m-red.png is tried once or (when another file was in flight) twice; the other file is not blamed
    assert tries in (1, 2)

    second = _batch(folder, out, log)
    assert second.returncode == 0, second.stderr
    assert "0 images" in second.stderr and f"{len(paths)} already done" in second.stderr
    assert list(read_rows(out)) == rows and len(log.read_text().split()) == tries  # nothing duplicated or retried

    third = _batch(folder, out, log, "--retry-errors")
    assert third.returncode == 1 and "1 images" in third.stderr, third.stderr
    assert len(log.read_text().split()) in (tries + 1, tries + 2)  # asked: tried again (and crashed again)
    again = list(read_rows(out))
    assert sorted(r["path"] for r in again) == paths
    assert [r["code"] for r in again if r["error"] is not None] == ["worker_crashed"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_parent_killed_with_sigkill_leaves_no_worker_behind(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        shutil.copy(TESTS / "data" / "obama_and_biden.jpg", folder / f"{i:02d}.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "faceage", "predict", str(folder), "--workers", "2",
                             "--output", str(tmp_path / "ages.jsonl")],
                            env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its workers started"
            time.sleep(0.1)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_default_workers_without_sched_getaffinity(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: the CPU count is used instead of a crash."""
    import os

    from faceage.batch.run import default_workers

    assert default_workers() >= 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_workers() == 3


# ----------------------------------------------------------------------------- who owns an output, how many workers
def test_workers_are_capped_at_twice_the_cpus(batch_photos, tmp_path, monkeypatch, capsys):
    """--workers 500 once started 201 processes (~20 GB); now at most 2 per CPU start, and it says so."""
    import faceage.batch.run as run

    monkeypatch.setattr(run, "default_workers", lambda: 2)
    started = []
    real = run.isolated_rows
    monkeypatch.setattr(run, "isolated_rows", lambda options, todo, workers: started.append(workers) or
                        real(options, todo, workers=min(workers, 2)))
    out = tmp_path / "ages.csv"
    assert main(["predict", str(batch_photos / "obama.jpg"), "--workers", "500", "--output", str(out)]) == 0
    assert started and started[0] <= 4
    assert f"--workers 500: starting {started[0]}" in capsys.readouterr().err
    monkeypatch.setattr(run, "_available_memory", lambda: 3 * 2**30)  # memory bounds it too
    n, note = run.usable_workers(None, model_bytes=100 * 2**20)
    assert n == 2 and note is None
    assert run.usable_workers(4, model_bytes=2**30)[0] == 1


def test_a_second_run_on_one_output_is_refused_and_the_first_keeps_every_row(tmp_path):
    """Two runs on one --output once lost the first run's rows (its parts were deleted under it)."""
    many = _copies(tmp_path, 4)
    photos = tmp_path / "photos"
    out = tmp_path / "ages.jsonl"
    first = _batch_process(many, out, 1)
    parts = tmp_path / "ages.jsonl.parts"
    while not list(parts.glob("part-*")):
        assert first.poll() is None, "the first run ended before the second could start"
        time.sleep(0.05)
    with pytest.raises(FaceageError, match=f"another run is writing this output \\(pid {first.pid} on "):
        run_batch([photos / "obama.jpg"], out, workers=1, progress=False)
    assert first.wait(timeout=120) == 0
    assert {r["path"] for r in read_rows(out)} == {str(p) for p in walk_images([many])}
    assert not (tmp_path / "ages.jsonl.lock").exists()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path):
    out = tmp_path / "ages.jsonl"
    (tmp_path / "ages.jsonl.lock").write_text("pid 999999 on elsewhere, since 2026-01-01 00:00:00\n")  # nobody holds it
    with OutputLock(out):
        with pytest.raises(FaceageError, match=f"pid {os.getpid()} "):
            OutputLock(out).acquire()  # a second owner, even in this process, is refused
    assert not (tmp_path / "ages.jsonl.lock").exists()
    run_batch([TESTS / "data" / "obama.jpg"], out, workers=1, progress=False)
    assert len(list(read_rows(out))) == 1


def test_csv_cells_are_never_formulas(tmp_path, monkeypatch):
    """A photo named like a formula is text in a spreadsheet, and reads back as its own name (so reruns skip it)."""
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("=1+1.jpg", "@SUM(A1).jpg", "'quoted.jpg", "-x.jpg"):
        shutil.copy(TESTS / "data" / "obama.jpg", photos / name)
    out = tmp_path / "ages.csv"
    monkeypatch.chdir(photos)  # paths as given: relative names begin the cells
    names = sorted(p.name for p in photos.iterdir())
    run_batch(names, out, workers=1, progress=False)
    import csv

    cells = sorted(r["path"] for r in csv.DictReader(out.open(encoding="utf-8")))
    assert cells == ["''quoted.jpg", "'-x.jpg", "'=1+1.jpg", "'@SUM(A1).jpg"]
    assert sorted(r["path"] for r in read_rows(out)) == names
    from faceage.batch.output import csv_text, csv_untext

    for text in ("=1+1", "+1", "-2", "@x", "\tx", "\rx", "'=1", "'", "plain", ""):
        assert csv_untext(csv_text(text)) == text
    assert csv_text("=1+1") == "'=1+1" and csv_text("plain") == "plain"
    assert run_batch(names, out, workers=1, progress=False).skipped == 4
