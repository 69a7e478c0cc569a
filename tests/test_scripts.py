"""Every script and benchmark honours --help (run as the docs run it, ``python -m scripts.NAME``): it prints its
usage and exits 0 without running anything, writing any file, or touching .git; and none of them reaches
another by editing ``sys.path``."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for folder in ("scripts", "benchmarks") for p in (ROOT / folder).glob("*.py")
                 if not p.name.startswith("_"))


def _tree_state() -> dict[str, float]:
    """Modification times of every file outside the ignored run folders (tracked or not), .git included."""
    skip = {"__pycache__", ".pytest_cache", "work", "runs"}
    return {str(p): p.stat().st_mtime for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)}


def _help(script: Path) -> subprocess.CompletedProcess:
    """``python -m FOLDER.NAME --help`` from the repository root, as the docs run them."""
    module = ".".join(script.relative_to(ROOT).with_suffix("").parts)
    return subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_every_script_and_benchmark_honours_help():
    assert len(SCRIPTS) >= 15  # the glob found them
    before = _tree_state()
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(SCRIPTS, pool.map(_help, SCRIPTS)))
    for script, r in results.items():
        name = script.relative_to(ROOT)
        assert r.returncode == 0, f"{name} --help: exit {r.returncode}\n{r.stderr[-2000:]}"
        assert r.stdout.startswith("usage:"), f"{name} --help printed no usage (did it run?):\n{r.stdout[:500]}"
    after = _tree_state()
    assert {p for p in set(before) | set(after) if before.get(p) != after.get(p)} == set()


@pytest.mark.parametrize("script", ["benchmarks/model_table.py", "scripts/golden.py"])
def test_tracked_results_are_written_only_with_write(script):
    r = _help(ROOT / script)
    assert "--write" in r.stdout


def test_no_script_benchmark_or_test_edits_sys_path():
    """scripts/, benchmarks/ and tests/ import each other as packages (``from scripts import hostile_videos``)."""
    edit = "sys.path." + "insert"  # spelled in two parts, so that this file does not count itself
    offenders = [str(p.relative_to(ROOT)) for folder in ("scripts", "benchmarks", "tests")
                 for p in (ROOT / folder).rglob("*.py") if edit in p.read_text()]
    assert offenders == []


def test_the_golden_generator_reproduces_the_committed_file():
    """scripts/golden.py writes what tests/test_golden.py and CI pin: run without --write, it must find the
    committed file holds what it computes (and write nothing)."""
    r = subprocess.run([sys.executable, "-m", "scripts.golden"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the committed golden.json holds these values" in r.stdout


def test_check_golden_json_passes_the_real_output_and_fails_a_changed_age(tmp_path):
    """CI pipes the installed wheel's predict --json through scripts/check_golden_json.py."""
    import json

    out = subprocess.run([sys.executable, "-m", "faceage", "predict", "tests/data/obama.jpg", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout

    def check(text: str) -> int:
        return subprocess.run([sys.executable, "-m", "scripts.check_golden_json"], input=text, capture_output=True,
                              text=True, timeout=60, cwd=ROOT).returncode

    assert check(out) == 0
    doc = json.loads(out)
    doc["faces"][0]["age"] += 1.0
    assert check(json.dumps(doc) + "\n") == 1


def test_the_group_photo_generator_is_reproducible_and_lists_every_face(tmp_path):
    """scripts/large_photos.py builds the benchmarks' 12 MP group photos: the same seed gives the same bytes, and
    photos.json lists 15-20 face boxes about 150-300 px wide centred inside the photo (a dlib box may reach past
    the edge), none overlapping."""
    from scripts.large_photos import SHARED_DATA, build_groups

    if not (SHARED_DATA / "fgnet").is_dir() or not (SHARED_DATA / "utkface").is_dir():
        pytest.skip("needs ../shared/data (FG-NET and UTKFace)")
    a, b = build_groups(tmp_path / "a", seed=5, n=1), build_groups(tmp_path / "b", seed=5, n=1)
    assert a == b and (tmp_path / "a" / a[0]["file"]).read_bytes() == (tmp_path / "b" / b[0]["file"]).read_bytes()
    (w, h), boxes = a[0]["size"], a[0]["faces"]
    assert (w, h) == (4000, 3000) and 15 <= len(boxes) <= 20
    for i, (l, t, r, btm) in enumerate(boxes):
        assert 0 <= (l + r) / 2 < w and 0 <= (t + btm) / 2 < h and 140 <= r - l <= 310
        assert all(r <= o[0] or o[2] <= l or btm <= o[1] or o[3] <= t for o in boxes[i + 1:])
