import subprocess
import sys

import pytest

from faceage.cli import COMMANDS, main


def test_top_level_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_explains_itself_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"faceage {name}" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "faceage", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "predict" in r.stdout


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_unknown_override_is_rejected(capsys):
    assert main(["train", "--config", "cpu", "optim.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_exit_codes_come_from_one_table(tmp_path, capsys):
    from faceage.cli import exit_code
    from faceage.errors import ConfigError, FaceageError, ImageError, ManifestError, WeightsError

    assert [exit_code(e("x")) for e in (ConfigError, ManifestError, WeightsError, ImageError, FaceageError)] == \
        [2, 3, 4, 5, 2]
    assert exit_code(KeyboardInterrupt()) == 130
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    (tmp_path / "photo.png").write_bytes(b"not decoded: the model fails first")
    assert main(["predict", str(tmp_path / "photo.png"), "--model", str(bad)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.safetensors" in err and "[bad_model_file]" in err
