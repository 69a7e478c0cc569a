"""A missing extra gives one message in every command: what is missing, the pip line, exit status 7.

A module is made missing by ``sys.modules[name] = None``: ``import name`` then fails and
``importlib.util.find_spec(name)`` answers None, as for a package that is not installed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from faceage.cli import exit_code, main
from faceage.extras import EXTRAS, MissingExtraError, require

DATA = Path(__file__).parent / "data"


def hide(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def one_message(capsys, extra: str, module: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"pip install 'faceage[{extra}]'" in err and module in err and "[missing_extra]" in err, err
    return err


@pytest.mark.parametrize("argv, extra, module", [
    (["video", "clip.mp4"], "video", "scipy"),
    (["train", "--config", "cpu"], "train", "torch"),
    (["export", "model.safetensors", "--out", "model.onnx"], "train", "torch"),
    (["serve"], "serve", "fastapi"),
    (["experiment", "ablation", "--aligned", "m.csv", "--out", "x"], "train", "torch"),
    (["experiment", "compare", "--data", "m.csv", "a", "--out", "x"], "plots", "matplotlib"),
])
def test_every_command_names_its_missing_extra(argv, extra, module, monkeypatch, capsys):
    hide(monkeypatch, module)
    assert main(argv) == 7
    err = one_message(capsys, extra, module)
    assert err.startswith(f"faceage {argv[0]}: error: ")


def test_parquet_output_names_its_extra_and_the_formats_without_one(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "pyarrow")
    assert main(["predict", str(DATA / "obama.jpg"), "--output", str(tmp_path / "ages.parquet")]) == 7
    assert ".csv or .jsonl" in one_message(capsys, "parquet", "pyarrow")
    assert not (tmp_path / "ages.parquet").exists()


def test_plots_name_their_extra(tmp_path, monkeypatch):
    from faceage.metrics import plot_cs_curves

    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"pip install 'faceage\[plots\]'"):
        plot_cs_curves({"m": {"1": 0.5}}, tmp_path / "cs.png")


def test_one_wording_and_exit_status(monkeypatch):
    hide(monkeypatch, "av", "scipy")
    with pytest.raises(MissingExtraError) as exc:
        require("video", "faceage video")
    assert str(exc.value) == "faceage video needs the 'video' extra (av, scipy not installed): pip install 'faceage[video]'"
    assert exit_code(exc.value) == 7 and isinstance(exc.value, ImportError)
    require("video", "faceage video", ("numpy",))  # present: nothing raised


def test_every_extra_is_declared_in_pyproject():
    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS) <= set(declared["optional-dependencies"])
    # inference alone needs none of them (torch and matplotlib included)
    deps = " ".join(declared["dependencies"])
    assert not any(name in deps for name in ("torch", "matplotlib", "fastapi", "face-recognition-models"))


def test_evaluate_without_plots_writes_the_numbers_and_names_the_extra(tmp_path, monkeypatch, capsys):
    import shutil

    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(DATA / name, tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,age\nobama.jpg,47\nbiden.jpg,66\n")
    hide(monkeypatch, "matplotlib")
    assert main(["evaluate", "--data", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "plots skipped" in out and "pip install 'faceage[plots]'" in out
    assert (tmp_path / "report" / "report.json").is_file() and not list((tmp_path / "report").glob("*.png"))


def test_predict_video_names_its_extra(monkeypatch):
    from faceage import AgeEstimator

    hide(monkeypatch, "scipy")
    with pytest.raises(MissingExtraError, match=r"predict_video needs the 'video' extra \(scipy not installed\)"):
        AgeEstimator().predict_video("clip.mp4")
