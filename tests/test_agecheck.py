"""Age checks (faceage.checks.fitting): calibration, policy fitting, the record field and the API."""
import json
from pathlib import Path

import numpy as np
import pytest

from faceage.checks.fitting import (AgeCheckPolicy, Calibration, NoPolicyError, check_policies, ece, fit_beta,
                              fit_isotonic, fit_platt, fit_policy, over_logit, pass_threshold, policy_for,
                              raw_p_over, wilson)
from faceage.errors import WeightsError
from faceage.nets.spec import ModelSpec
from faceage.models.weights import ModelRecord


def _overconfident(n: int = 6000, seed: int = 0, over: int = 18):
    """Ages 6..40 and the raw log-odds of being over: far too sure of themselves (3x too steep)."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(6, 41, n)
    z = ages - over + 0.5 + rng.normal(0, 3, n)  # P(over | z) ~ sigmoid(z / ~2)
    return 3 * z, ages


def test_p_over_is_the_distribution_from_the_threshold_on_as_log_odds():
    probs = np.full((3, 101), 1e-30)
    probs[0, 17], probs[0, 18] = 0.4, 0.6
    probs[1, 30] = 1.0
    probs[2, 30], probs[2, 10] = 1.0, 1e-20  # p_over rounds to 1 but its odds stay finite
    z = over_logit(np.log(probs), 18)
    assert raw_p_over(z)[:2] == pytest.approx([0.6, 1.0])
    assert z[2] == pytest.approx(np.log(1e20), rel=1e-6) and z[1] > z[2]
    with pytest.raises(ValueError, match="1..100"):
        over_logit(np.log(probs), 101)


def test_wilson_interval_holds_the_share_and_is_wide_for_small_counts():
    lo, hi = wilson(2, 10)
    assert lo < 0.2 < hi and hi - lo > 0.3
    lo, hi = wilson(200, 1000)
    assert lo < 0.2 < hi and hi - lo < 0.06
    assert wilson(0, 50)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("method", ["platt", "beta", "isotonic"])
def test_calibration_reduces_ece_on_held_out_rows_of_a_miscalibrated_set(method):
    z, ages = _overconfident(seed=1)
    y = (ages >= 18).astype(float)
    fit = {"platt": fit_platt, "beta": fit_beta, "isotonic": fit_isotonic}[method]
    cal = fit(z[:3000], y[:3000])
    before, after = ece(raw_p_over(z[3000:]), y[3000:]), ece(cal(z[3000:]), y[3000:])
    assert before > 0.04 and after < before / 2, (before, after)
    assert np.all(np.diff(cal(np.linspace(-50, 50, 1001))) >= 0)  # monotone: a threshold keeps its order


def test_platt_softens_an_overconfident_model():
    p, ages = _overconfident()
    cal = fit_platt(p, (ages >= 18).astype(float))
    assert 0.1 < cal.a < 0.3  # the log-odds were 3x too steep, and noisy


@pytest.mark.parametrize("share", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("method", ["auto", "platt"])
def test_fitted_threshold_passes_at_most_the_share_just_under_the_threshold(share, method):
    p, ages = _overconfident(seed=2)
    pol = fit_policy(p, ages, 18, max_share=share, calibration=method)
    band = (ages >= 13) & (ages <= 17)
    passed = p[band] >= pol.logit_threshold
    assert passed.mean() <= share
    if method == "platt":  # strictly monotone, no ties: exactly as many as allowed pass, not needlessly fewer
        assert passed.sum() == int(np.floor(share * band.sum()))
        assert np.array_equal(passed, pol.calibrated(p[band]) >= pol.threshold)  # the same on calibrated p_over
    assert pol.band == (13, 17) and pol.validation["band"]["share"] == pytest.approx(passed.mean(), abs=1e-5)
    adults = p[ages >= 25] >= pol.logit_threshold
    assert pol.validation["ages"]["25+"]["share"] == pytest.approx(adults.mean(), abs=1e-5) and adults.mean() > 0.5
    assert pol.validation["ece_calibrated"] < pol.validation["ece_raw"]


def test_pass_threshold_on_ties_refuses_rather_than_passes_too_many():
    assert pass_threshold(np.array([0.9] * 10 + [0.1] * 90), 0.05) > 0.9  # 10 tied > 5%: none of them pass
    t = pass_threshold(np.array([0.99, 0.5, 0.4]), 0.34)  # one of three may pass
    assert 0.5 < t <= 0.99
    assert pass_threshold(np.array([3.0, 2.0]), 0.01) == 4.0  # none may pass: above the largest


def test_policy_fitting_refuses_data_it_cannot_use():
    p, ages = _overconfident()
    with pytest.raises(ValueError, match="every face is over"):
        fit_policy(p[ages >= 18], ages[ages >= 18], 18)
    with pytest.raises(ValueError, match="no validation face in the band"):
        fit_policy(p[(ages < 10) | (ages > 20)], ages[(ages < 10) | (ages > 20)], 16)


def test_record_round_trip_keeps_the_policies_and_old_records_load(tmp_path):
    p, ages = _overconfident()
    policies = {o: fit_policy(p, ages, o, calibration=c) for o, c in ((16, "isotonic"), (18, "platt"))}
    rec = ModelRecord(model=ModelSpec("ma_sfv2", 0.5), age_checks=policies)
    back = ModelRecord.from_json(rec.to_json())
    assert back.age_checks == policies and back == rec
    old = json.loads(rec.to_json())
    del old["age_checks"]
    assert ModelRecord.from_json(json.dumps(old)).age_checks == {}
    assert "age_checks" not in ModelRecord(model=ModelSpec("ma_sfv2", 0.5)).to_json()


@pytest.mark.parametrize("change, words", [
    ({"threshold": 1.5}, "threshold must be in 0..1"),
    ({"logit_threshold": None}, "logit_threshold must be a finite number"),
    ({"over": 200}, "over must be a whole age"),
    ({"calibration": {"method": "platt", "a": -1, "b": 0}}, "must be positive"),
    ({"calibration": {"method": "magic"}}, "method platt, beta, isotonic"),
    ({"calibration": {"method": "beta", "a": 1.0, "b": 0.0, "c": -0.5}}, "must be >= 0"),
    ({"calibration": {"method": "isotonic", "x": [0, 1], "y": [1, 0]}}, "non-decreasing"),
    ({"band": "13-17"}, "band must be"),
    ({"colour": "red"}, "unknown fields"),
])
def test_bad_policies_fail_at_load_naming_the_field(change, words):
    p, ages = _overconfident()
    good = fit_policy(p, ages, 18).to_dict()
    rec = json.loads(ModelRecord(model=ModelSpec("ma_sfv2", 0.5)).to_json())
    rec["age_checks"] = {"18": {**good, **change}}
    with pytest.raises(WeightsError, match=f"m.onnx: bad faceage record: age_checks\\[18\\].*{words}"):
        ModelRecord.from_json(json.dumps(rec), source="m.onnx")
    with pytest.raises(ValueError, match="holds the policy for over=18"):
        check_policies({"21": good})


def test_unknown_threshold_is_a_clear_error():
    p, ages = _overconfident()
    rec = ModelRecord(model=ModelSpec("ma_sfv2", 0.5), age_checks={18: fit_policy(p, ages, 18)})
    assert policy_for(rec, 18).over == 18
    with pytest.raises(NoPolicyError, match="no age-check policy for over=20 .*it has: 18.*--fit-on"):
        policy_for(rec, 20)


def test_calibration_from_dict_round_trips():
    for c in (Calibration("platt", a=0.5, b=0.1), Calibration("beta", a=0.5, b=0.1, c=0.3),
              Calibration("isotonic", x=(0.0, 0.5, 1.0), y=(0.0, 0.2, 1.0))):
        assert Calibration.from_dict(c.to_dict()) == c


def test_beta_with_equal_slopes_is_platt_and_fits_lopsided_odds_better():
    z = np.linspace(-30, 30, 61)
    assert Calibration("beta", a=0.4, b=0.2, c=0.4)(z) == pytest.approx(Calibration("platt", a=0.4, b=0.2)(z))
    rng = np.random.default_rng(3)
    z = rng.normal(0, 6, 20000)  # over-confident above 0 only: the true slope is 0.2 there, 1 below
    y = (rng.random(z.size) < 1 / (1 + np.exp(-np.where(z > 0, 0.2 * z, z)))).astype(float)
    assert ece(fit_beta(z, y)(z), y) < ece(fit_platt(z, y)(z), y)


def test_auto_chooses_a_strictly_increasing_map_by_out_of_fold_ece():
    from faceage.checks.fitting import choose_calibration

    z, ages = _overconfident(seed=4)
    best, scores = choose_calibration(z, (ages >= 18).astype(float))
    assert best in ("platt", "beta") and set(scores) == {"platt", "beta", "isotonic"}
    assert scores[best] == min(scores["platt"], scores["beta"])


def test_check_aligned_uses_the_policy_given(small_model):
    from faceage import AgeEstimator

    est = AgeEstimator(small_model)
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    scores = est.score_aligned(crops)
    raw = scores.probs[:, 18:].sum(axis=1)
    lenient = AgeCheckPolicy(18, -1e9, 0.0, Calibration("platt", a=1.0, b=0.0))
    strict = AgeCheckPolicy(18, 1e9, 1.0, Calibration("platt", a=1.0, b=0.0))
    got = est.check_aligned(crops, 18, policy=lenient)
    assert [c.decision for c in got] == ["pass"] * 3 and [c.box for c in got] == [None] * 3
    assert [c.p_over for c in got] == pytest.approx(raw)
    assert [c.age for c in got] == [a.age for a in est.predict_aligned(crops)]
    assert {c.decision for c in est.check_aligned(crops, 18, policy=strict)} == {"refer"}
    with pytest.raises(NoPolicyError, match="over=18, not over=21"):
        est.check_aligned(crops, 21, policy=strict)
    with pytest.raises(NoPolicyError, match="no age-check policy"):
        est.check_aligned(crops, 18)  # this test model carries none
    assert est.check(np.full((64, 64, 3), 127, np.uint8), 18, policy=lenient) == []  # no face, no check


# --------------------------------------------------------------------------- a model whose age is the brightness
def brightness_model(path: Path, sigma: float = 1.5, size: int = 16) -> Path:
    """An ONNX 'age model' reading the age off the mean brightness b of a whole image (age = (b - 40) / 2)
    as a Gaussian of ``sigma`` years over ages 0..100: too sure of itself when the photos' brightness is noisy."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(101, dtype=np.float64)
    npix = size * size * 3
    w = np.tile(k / (2 * sigma ** 2 * npix), (npix, 1)).astype(np.float32)
    bias = (-20 * k / sigma ** 2 - k ** 2 / (2 * sigma ** 2)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["crops"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["lin"]),
             helper.make_node("Add", ["lin", "bias"], ["logits"]),
             helper.make_node("ReduceMean", ["logits", "axes"], ["reg"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "brightness", [helper.make_tensor_value_info("crops", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 101]),
         helper.make_tensor_value_info("reg", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    record = ModelRecord(model=ModelSpec("ma_sfv2", 0.5), input_size=size, crop=None)
    helper.set_model_props(model, {"faceage": record.to_json()})
    onnx.save(model, str(path))
    return path


def brightness_photos(root: Path, n: int = 400, seed: int = 0, noise: float = 4.0) -> Path:
    """PNGs aged 6..40 whose brightness is 40 + 2 * (age + N(0, noise)), and their manifest."""
    import csv

    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        age = int(rng.integers(6, 41))
        level = int(np.clip(round(40 + 2 * (age + rng.normal(0, noise))), 0, 255))
        Image.fromarray(np.full((16, 16, 3), level, np.uint8)).save(root / f"{i:04d}.png")
        rows.append((f"{i:04d}.png", age))
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "age"), *rows])
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def brightness(tmp_path_factory):
    root = tmp_path_factory.mktemp("brightness")
    return brightness_model(root / "b.onnx"), brightness_photos(root / "val"), brightness_photos(root / "test", seed=1)


def test_age_check_experiment_fits_stores_and_reports_policies(brightness, tmp_path):
    import shutil

    from faceage import AgeEstimator
    from faceage.cli import main

    model, val, test = brightness
    mine = shutil.copy(model, tmp_path / "mine.onnx")
    out = tmp_path / "report"
    assert main(["experiment", "age-check", "--model", str(mine), "--data", f"val={val}", "--data", f"test={test}",
                 "--fit", "val", "--thresholds", "16,18", "--write-model", str(mine), "--out", str(out),
                 "--tta", "none"]) == 0
    doc = json.loads((out / "report.json").read_text())
    est = AgeEstimator(mine, tta="none")
    assert sorted(est.record.age_checks) == [16, 18]
    pol = est.record.age_checks[18]
    assert pol.validation["band"]["share"] <= 0.01 and pol.validation["ece_calibrated"] < pol.validation["ece_raw"]
    assert pol.validation["command"] == doc["provenance"]["command"] and "val (" in pol.validation["data"]
    assert doc["results"]["policies"]["18"] == json.loads(json.dumps(pol.to_dict()))
    on_test = doc["results"]["sets"]["test"]["18"]
    assert on_test["ece_calibrated"] < on_test["ece_raw"]  # calibration carries over to unseen faces
    assert on_test["bands"]["13-17"]["share"] < 0.05 and on_test["bands"]["25+"]["share"] > 0.5
    for name in ("report.md", "tradeoff_val.png", "reliability_test.png"):
        assert (out / name).is_file()
    md = (out / "report.md").read_text()
    assert "| over 18 |" in md and "Wilson" in md
    # the same model's policies, reported without --fit, give the same numbers
    again = tmp_path / "again"
    assert main(["experiment", "age-check", "--model", str(mine), "--data", f"test={test}", "--thresholds", "18",
                 "--out", str(again), "--tta", "none"]) == 0
    assert json.loads((again / "report.json").read_text())["results"]["sets"]["test"]["18"] == on_test
    # and the checks through the API agree with the report
    from faceage.data.manifest import read_manifest

    rows = read_manifest(test).samples
    got = [est.check(s.path, 18)[0] for s in rows]
    teens = [c.decision == "pass" for c, s in zip(got, rows) if 13 <= s.age <= 17]
    assert sum(teens) == on_test["bands"]["13-17"]["passed"]
    assert got[0].box == (0, 0, 16, 16) and got[0].policy == pol


def test_age_check_experiment_refuses_what_it_cannot_do(brightness, tmp_path, capsys):
    from faceage.cli import main

    model, val, _ = brightness
    assert main(["experiment", "age-check", "--model", str(model), "--data", f"val={val}", "--out",
                 str(tmp_path / "o")]) == 2
    assert "no age-check policy for over=13" in capsys.readouterr().err
    assert main(["experiment", "age-check", "--model", str(model), "--data", f"val={val}", "--fit", "test",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--fit names ['test']" in capsys.readouterr().err
    assert main(["experiment", "age-check", "--model", str(model), "--data", f"{val}", "--out", str(tmp_path)]) == 2
    assert "LABEL=SOURCE" in capsys.readouterr().err


def test_age_check_source_from_a_training_config_is_that_data_sets_validation_split(tmp_path):
    """CONFIG.yaml:DATASET rebuilds the training split and keeps that data set's validation rows only."""
    import yaml

    from conftest import synthetic_dataset
    from faceage.errors import ConfigError
    from faceage.experiments.age_check import load_source

    a, b = synthetic_dataset(tmp_path / "a", n=30), synthetic_dataset(tmp_path / "b", n=20, seed=1)
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"datasets": {"alpha": str(a), "beta": str(b)}}}))
    label, samples, prealigned, text = load_source(f"v={cfg}:beta")
    assert label == "v" and prealigned and "beta validation split" in text
    assert samples and {s.dataset for s in samples} == {"beta"} and {s.split for s in samples} == {"val"}
    assert len(samples) < 20
    with pytest.raises(ConfigError, match="has no data set 'gamma' \\(it has: alpha, beta\\)"):
        load_source(f"v={cfg}:gamma")


# --------------------------------------------------------------------------- the bundled model
DATA = Path(__file__).parent / "data"


def test_bundled_models_carry_the_same_policies_for_the_usual_thresholds():
    from faceage.models import locate
    from faceage.runtime.onnx_backend import OnnxBackend
    from faceage.models.weights import read_record

    torch_file, onnx_file = locate(None, "torch"), locate(None, "onnx")
    rec = read_record(torch_file)
    assert OnnxBackend(onnx_file).record == rec
    assert sorted(rec.age_checks) == [13, 16, 18, 21, 25]
    for over, pol in rec.age_checks.items():
        v = pol.validation
        assert pol.band == (over - 5, over - 1) and pol.max_share == 0.01
        assert v["band"]["share"] <= 0.01 and v["ece_calibrated"] < v["ece_raw"]
        assert "validation split" in v["data"] and "fgnet" not in v["data"].lower()  # never fitted on FG-NET
        assert "experiment age-check" in v["command"]


def test_cli_check_json_on_the_test_photos_matches_the_golden_decisions(tmp_path, capsys):
    from PIL import Image

    from faceage.cli import main

    from faceage.models import DEFAULT

    golden = json.loads((DATA / "golden.json").read_text())["models"][DEFAULT]["checks"]["18"]
    Image.fromarray(np.full((96, 96, 3), 120, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xffjunk")
    photos = [str(DATA / n) for n in ("obama.jpg", "biden.jpg", "obama_and_biden.jpg")]
    code = main(["check", "--over", "18", "--json", *photos, str(tmp_path / "blank.png"), str(tmp_path / "broken.jpg")])
    assert code == 1  # as predict: a file that cannot be read fails the run, after the others are answered
    lines = {Path(d["path"]).name: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert lines["blank.png"] == {"path": str(tmp_path / "blank.png"), "over": 18, "faces": []}
    assert "broken.jpg" in lines["broken.jpg"]["error"] and "faces" not in lines["broken.jpg"]
    for name, want in golden.items():
        got = lines[name]["faces"]
        assert [f["decision"] for f in got] == [w["decision"] for w in want], name
        assert all(set(f) == {"box", "age", "p_over", "decision"} for f in got)
        for f, w in zip(got, want):
            assert np.abs(np.subtract(f["box"], w["box"])).max() <= 2 and abs(f["p_over"] - w["p_over"]) <= 0.01
    assert [f["decision"] for f in lines["obama.jpg"]["faces"]] == ["pass"]  # 47 at the time of the portrait


def test_check_runs_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom faceage.cli import main\n"
            f"rc = main(['check', '--over', '18', {str(DATA / 'obama.jpg')!r}, '--json'])\n"
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1])["faces"][0]["decision"] == "pass"


def test_cli_check_errors_and_text(capsys):
    from faceage.cli import main

    assert main(["check", "--over", "20", str(DATA / "obama.jpg")]) == 2
    err = capsys.readouterr().err
    assert "no age-check policy for over=20" in err and "13, 16, 18, 21, 25" in err and "[no_policy]" in err
    assert main(["check", "--over", "18", str(DATA / "obama.jpg")]) == 0
    assert "p_over(18)" in capsys.readouterr().out


@pytest.mark.parametrize("over", ["0", "-1", "200"])
def test_cli_check_refuses_an_age_outside_the_models_range(over, capsys):
    """Not a ValueError traceback: a one-line error naming the flag, with or without --fit-on."""
    from faceage.cli import main

    for extra in ([], ["--fit-on", str(DATA)]):
        code = main(["check", "--over", over, str(DATA / "obama.jpg"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and f"--over {over}: an age check needs an age from 1 to 100" in err, err


def test_cli_check_fits_a_policy_for_another_threshold_from_labelled_faces(brightness, capsys):
    from faceage.cli import main

    model, val, test = brightness
    photo = str(Path(test).parent / "0000.png")
    assert main(["check", "--over", "20", photo, "--model", str(model), "--fit-on", str(val), "--json",
                 "--tta", "none"]) == 0
    captured = capsys.readouterr()
    assert "policy fitted on" in captured.err and "aged 15-19 passed" in captured.err
    face = json.loads(captured.out)["faces"][0]
    assert face["decision"] in ("pass", "refer") and 0 <= face["p_over"] <= 1


def test_a_policy_fitted_on_a_handful_of_faces_is_refused(brightness, tmp_path, capsys):
    """A 3-face --fit-on once gave a policy under which 52 of 80 UTKFace 13-17-year-olds passed."""
    from faceage.cli import main

    model, _, test = brightness
    few = brightness_photos(tmp_path / "few", n=3)
    code = main(["check", "--over", "20", str(Path(test).parent / "0000.png"), "--model", str(model),
                 "--fit-on", str(few), "--tta", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "a policy needs at least 50 there" in err and "Traceback" not in err, err


def test_the_wilson_bound_lets_no_one_pass_where_the_sample_cannot_show_the_share():
    """60 faces cannot show a 1% pass rate (even 0 of 60 has a 95% upper bound of 6%): none of them may pass;
    with 2,000 the bound allows a few, fewer than the point share would."""
    from faceage.checks.fitting import pass_threshold, wilson

    rng = np.random.default_rng(0)
    z = rng.normal(size=60)
    assert pass_threshold(z, 0.01, "point") > z.max() - 1e-9  # floor(0.6) = 0: the same here
    t = pass_threshold(z, 0.05, "wilson")
    assert (z >= t).sum() == 0 and (z >= pass_threshold(z, 0.05, "point")).sum() == 3
    big = rng.normal(size=2000)
    k_point = int((big >= pass_threshold(big, 0.01, "point")).sum())
    k_wilson = int((big >= pass_threshold(big, 0.01, "wilson")).sum())
    assert k_point == 20 and 0 < k_wilson < k_point and wilson(k_wilson, 2000)[1] <= 0.01 < wilson(k_wilson + 1, 2000)[1]
    with pytest.raises(ValueError, match="bound must be one of point, wilson"):
        pass_threshold(z, 0.01, "exact")


def test_an_age_check_prints_on_one_line():
    """Printing one AgeCheck once dumped its whole policy (validation tables, command): kilobytes per face."""
    from faceage import AgeEstimator

    c = AgeEstimator().check(DATA / "obama.jpg", 18)[0]
    text = repr(c)
    assert text.startswith("AgeCheck(over=18, box=(") and "decision='pass'" in text and len(text) < 200
