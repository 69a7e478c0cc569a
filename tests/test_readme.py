"""The README's Python examples run as written (once they did not: `crops` and `my_detector` were undefined)."""
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_readme_python_example_runs(i, tmp_path, monkeypatch):
    block = python_blocks()[i]
    shutil.copy(DATA / "obama.jpg", tmp_path / "photo.jpg")
    shutil.copy(DATA / "obama_and_biden.jpg", tmp_path / "group.jpg")
    if "clip.mp4" in block:
        pytest.importorskip("av")
        import numpy as np
        from PIL import Image

        from faceage.video.writer import VideoWriter

        frame = np.asarray(Image.open(DATA / "obama.jpg").convert("RGB").resize((320, 240)))
        with VideoWriter(tmp_path / "clip.mp4", fps=10) as w:
            for k in range(20):
                w.write(frame, k / 10)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md python block {i}", "exec"), {"__name__": "__readme__"})
