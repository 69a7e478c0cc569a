"""File-system oddities in a photo folder are error rows with codes, in ``faceage predict DIR`` and in
batch mode alike: a link loop, a link cycle, a dangling link, a folder that cannot be listed; a name
that is not UTF-8 is read and written losslessly (docs/batch.md: the escaped path form)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceage.batch import run_batch
from faceage.batch.output import escape_path, read_rows, unescape_path
from faceage.cli import main

RAW_NAME = b"caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8


@pytest.fixture
def odd_folder(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "locked").mkdir()
    grey = Image.fromarray(np.full((48, 48, 3), 128, np.uint8))
    grey.save(root / "a.png")
    grey.save(root / "sub" / "b.png")
    grey.save(root / "back\\slash.png")
    with open(os.path.join(os.fsencode(root), RAW_NAME), "wb") as fh:
        grey.save(fh, "PNG")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "ping.jpg").symlink_to("pong.jpg")
    (root / "pong.jpg").symlink_to("ping.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "sub" / "up").symlink_to("..")  # a link to a folder is not entered: no endless walk
    grey.save(root / "locked" / "c.png")
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root, so the folder's listing fails here instead
        if not isinstance(path, int) and os.fspath(path) == str(root / "locked"):
            raise PermissionError(13, "Permission denied", str(root / "locked"))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return root


def expected_codes(root: Path) -> dict[str, str | None]:
    return {str(root / "a.png"): None, str(root / "back\\slash.png"): None,
            os.fsdecode(os.path.join(os.fsencode(root), RAW_NAME)): None, str(root / "dangling.jpg"): "file_not_found",
            str(root / "locked"): "unreadable_file", str(root / "loop.jpg"): "symlink_loop",
            str(root / "ping.jpg"): "symlink_loop", str(root / "pong.jpg"): "symlink_loop",
            str(root / "sub" / "b.png"): None}


def test_escaped_paths_round_trip():
    for path in ("/photos/a.jpg", "/photos/é ü 漢.png", "/a\\b\\x41.png", os.fsdecode(b"/x/" + RAW_NAME),
                 os.fsdecode(b"/x/\\xff-\xff.png")):
        text = escape_path(path)
        text.encode("utf-8")  # always writable as UTF-8
        assert unescape_path(text) == path
    assert escape_path("/photos/é.png") == "/photos/é.png"  # ordinary names are written as they are
    assert escape_path(os.fsdecode(b"/x/" + RAW_NAME)) == "/x/caf\\xe9-\\xff.png"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_batch_reports_every_oddity_as_an_error_row(odd_folder, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"ages{suffix}"
    report = run_batch([odd_folder], out, recursive=True, workers=1, progress=False)
    rows = list(read_rows(out))
    codes = {r["path"]: r["code"] for r in rows}
    assert codes == expected_codes(odd_folder)
    assert report.errors == 5 and report.no_face == 4
    if suffix != ".parquet":
        out.read_bytes().decode("utf-8")  # the file is UTF-8 whatever the names
        escaped = "caf\\\\xe9-\\\\xff.png" if suffix == ".jsonl" else "caf\\xe9-\\xff.png"  # JSON doubles \\
        assert escaped in out.read_text()
    again = run_batch([odd_folder], out, recursive=True, workers=1, progress=False)  # all done: nothing redone
    assert again.images == 0 and again.skipped == len(rows)


def test_predict_dir_reports_the_same(odd_folder, capsys):
    assert main(["predict", "-r", str(odd_folder), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = {d["path"]: d.get("error") for d in lines}
    want = expected_codes(odd_folder)
    assert set(got) == set(want)
    for path, code in want.items():
        assert (got[path] is None) == (code is None), path
    assert "symbolic link loop" in got[str(odd_folder / "loop.jpg")]
    assert main(["predict", "-r", str(odd_folder)]) == 1  # text lines: the odd name does not stop the run
    captured = capsys.readouterr()
    assert "caf\\udce9-\\udcff.png: no face found" in captured.out
    assert "5 of 9 files could not be read" in captured.err and "pong.jpg: symbolic link loop" in captured.err
