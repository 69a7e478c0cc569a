import subprocess
import sys
from pathlib import Path

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


def test_exit_codes_mean_what_the_help_says(tmp_path, capsys):
    """A lone unreadable image exits 5; a port in use exits 6 (not 3, "unusable data set"); a bad detector
    option is refused by type (exit 2), each with one line."""
    import socket

    assert main([]) == 0
    usage = capsys.readouterr().out
    assert "5 unreadable image (given alone)" in usage and "6 serve cannot listen" in usage
    (tmp_path / "photo.jpg").write_text("not an image")
    assert main(["predict", str(tmp_path / "photo.jpg")]) == 5
    assert "not a recognised image" in capsys.readouterr().err
    (tmp_path / "other.jpg").write_text("not an image either")
    assert main(["predict", str(tmp_path / "photo.jpg"), str(tmp_path / "other.jpg")]) == 1  # some files failed
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "photo.jpg"), "--detector-option", "cnn=maybe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "option cnn: 'maybe' is not true or false" in err
    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[address_unusable]" in err and "--port" in err


def test_a_reader_that_goes_away_ends_the_run_quietly_with_141():
    """``faceage predict DIR --json | head -1``: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    photos = [str(Path(__file__).parent / "data" / n) for n in ("obama.jpg", "biden.jpg", "obama_and_biden.jpg")] * 4
    proc = subprocess.Popen([sys.executable, "-m", "faceage", "predict", *photos, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and b'"faces"' in first
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_that_is_not_stdout_is_a_real_error(monkeypatch):
    """Only a closed standard output ends a run quietly; a worker's broken pipe still fails loudly."""
    import faceage.cli.predict as predict

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(predict, "run", broken)
    import faceage.cli

    monkeypatch.setattr(faceage.cli, "_stdout_closed", lambda: False)  # stdout fine, whatever pytest captures with
    with pytest.raises(BrokenPipeError):
        main(["predict", "photo.jpg"])
