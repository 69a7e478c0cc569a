"""Age checks (faceage.agecheck): calibration, policy fitting, the record field and the API."""
import json

import numpy as np
import pytest

from faceage.agecheck import (AgeCheckPolicy, Calibration, NoPolicyError, check_policies, ece, fit_isotonic,
                              fit_platt, fit_policy, p_over, pass_threshold, policy_for, wilson)
from faceage.errors import WeightsError
from faceage.weights import ModelRecord


def _overconfident(n: int = 6000, seed: int = 0, over: int = 18):
    """Ages 6..40 and a raw p_over that is far too sure of itself (its logit is 3x too steep)."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(6, 41, n)
    z = (ages - over + 0.5 + rng.normal(0, 3, n)) * 1.0  # P(over | z) ~ sigmoid(z / ~2)
    return 1 / (1 + np.exp(-3 * z)), ages


def test_p_over_sums_the_distribution_from_the_threshold():
    probs = np.zeros((2, 101))
    probs[0, 17], probs[0, 18] = 0.4, 0.6
    probs[1, 30] = 1.0
    assert p_over(probs, 18) == pytest.approx([0.6, 1.0])
    with pytest.raises(ValueError, match="1..100"):
        p_over(probs, 101)


def test_wilson_interval_holds_the_share_and_is_wide_for_small_counts():
    lo, hi = wilson(2, 10)
    assert lo < 0.2 < hi and hi - lo > 0.3
    lo, hi = wilson(200, 1000)
    assert lo < 0.2 < hi and hi - lo < 0.06
    assert wilson(0, 50)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_reduces_ece_on_held_out_rows_of_a_miscalibrated_set(method):
    p, ages = _overconfident(seed=1)
    y = (ages >= 18).astype(float)
    fit = {"platt": fit_platt, "isotonic": fit_isotonic}[method]
    cal = fit(p[:3000], y[:3000])
    before, after = ece(p[3000:], y[3000:]), ece(cal(p[3000:]), y[3000:])
    assert before > 0.04 and after < before / 2, (before, after)
    assert np.all(np.diff(cal(np.linspace(0, 1, 101))) >= 0)  # monotone: a threshold keeps its order


def test_platt_softens_an_overconfident_model():
    p, ages = _overconfident()
    cal = fit_platt(p, (ages >= 18).astype(float))
    assert 0.1 < cal.a < 0.6  # the logit was 3x too steep


@pytest.mark.parametrize("share", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("method", ["auto", "platt"])
def test_fitted_threshold_passes_at_most_the_share_just_under_the_threshold(share, method):
    p, ages = _overconfident(seed=2)
    pol = fit_policy(p, ages, 18, max_share=share, calibration=method)
    band = (ages >= 13) & (ages <= 17)
    passed = pol.calibrated(p[band]) >= pol.threshold
    assert passed.mean() <= share
    if method == "platt":  # no ties: exactly as many as allowed pass, not needlessly fewer
        assert passed.sum() == int(np.floor(share * band.sum()))
    assert pol.band == (13, 17) and pol.validation["band"]["share"] == pytest.approx(passed.mean(), abs=1e-5)
    adults = pol.calibrated(p[ages >= 25]) >= pol.threshold
    assert pol.validation["ages"]["25+"]["share"] == pytest.approx(adults.mean(), abs=1e-5) and adults.mean() > 0.5
    assert pol.validation["ece_calibrated"] < pol.validation["ece_raw"]


def test_pass_threshold_on_ties_refuses_rather_than_passes_too_many():
    assert pass_threshold(np.array([0.9] * 10 + [0.1] * 90), 0.05) > 0.9  # 10 tied > 5%: none of them pass
    t = pass_threshold(np.array([0.99, 0.5, 0.4]), 0.34)  # one of three may pass
    assert 0.5 < t <= 0.99


def test_policy_fitting_refuses_data_it_cannot_use():
    p, ages = _overconfident()
    with pytest.raises(ValueError, match="every face is over"):
        fit_policy(p[ages >= 18], ages[ages >= 18], 18)
    with pytest.raises(ValueError, match="no validation face in the band"):
        fit_policy(p[(ages < 10) | (ages > 20)], ages[(ages < 10) | (ages > 20)], 16)


def test_record_round_trip_keeps_the_policies_and_old_records_load(tmp_path):
    p, ages = _overconfident()
    policies = {o: fit_policy(p, ages, o, calibration=c) for o, c in ((16, "isotonic"), (18, "platt"))}
    rec = ModelRecord(model={"arch": "ma_sfv2", "width": 0.5}, age_checks=policies)
    back = ModelRecord.from_json(rec.to_json())
    assert back.age_checks == policies and back == rec
    old = json.loads(rec.to_json())
    del old["age_checks"]
    assert ModelRecord.from_json(json.dumps(old)).age_checks == {}
    assert "age_checks" not in ModelRecord(model={"arch": "ma_sfv2", "width": 0.5}).to_json()


@pytest.mark.parametrize("change, words", [
    ({"threshold": 1.5}, "threshold must be in 0..1"),
    ({"over": 200}, "over must be a whole age"),
    ({"calibration": {"method": "platt", "a": -1, "b": 0}}, "must be positive"),
    ({"calibration": {"method": "magic"}}, "method platt or isotonic"),
    ({"calibration": {"method": "isotonic", "x": [0, 1], "y": [1, 0]}}, "non-decreasing"),
    ({"band": "13-17"}, "band must be"),
    ({"colour": "red"}, "unknown fields"),
])
def test_bad_policies_fail_at_load_naming_the_field(change, words):
    p, ages = _overconfident()
    good = fit_policy(p, ages, 18).to_dict()
    rec = json.loads(ModelRecord(model={"arch": "ma_sfv2", "width": 0.5}).to_json())
    rec["age_checks"] = {"18": {**good, **change}}
    with pytest.raises(WeightsError, match=f"m.onnx: bad faceage record: age_checks\\[18\\].*{words}"):
        ModelRecord.from_json(json.dumps(rec), source="m.onnx")
    with pytest.raises(ValueError, match="holds the policy for over=18"):
        check_policies({"21": good})


def test_unknown_threshold_is_a_clear_error():
    p, ages = _overconfident()
    rec = ModelRecord(model={"arch": "ma_sfv2", "width": 0.5}, age_checks={18: fit_policy(p, ages, 18)})
    assert policy_for(rec, 18).over == 18
    with pytest.raises(NoPolicyError, match="no age-check policy for over=20 .*it has: 18.*--fit-on"):
        policy_for(rec, 20)


def test_calibration_from_dict_round_trips():
    for c in (Calibration("platt", a=0.5, b=0.1), Calibration("isotonic", x=(0.0, 0.5, 1.0), y=(0.0, 0.2, 1.0))):
        assert Calibration.from_dict(c.to_dict()) == c


def test_check_aligned_uses_the_policy_given(small_model):
    from faceage import AgeEstimator

    est = AgeEstimator(small_model)
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    scores = est.score_aligned(crops)
    raw = p_over(scores.probs, 18)
    lenient = AgeCheckPolicy(18, 0.0, Calibration("platt", a=1.0, b=0.0))
    strict = AgeCheckPolicy(18, 1.0, Calibration("platt", a=1.0, b=0.0))
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
