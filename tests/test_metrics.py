"""Age metrics on hand-checked numbers."""
import numpy as np
import pytest

from faceage.metrics import age_metrics, balanced_mae


def test_age_metrics_mae_cs_and_per_decade_bias():
    m = age_metrics(pred=[3, 5, 30, 37, 50], true=[2, 4, 33, 39, 60])
    assert m["n"] == 5 and m["mae"] == pytest.approx((1 + 1 + 3 + 2 + 10) / 5)
    # 5-year bins 0-4 (errors 1, 1), 30-34 (3), 35-39 (2), 60-64 (10): each bin weighs the same
    assert m["mae_balanced"] == pytest.approx((1 + 3 + 2 + 10) / 4)
    assert np.isnan(balanced_mae([], []))
    assert m["cs"]["0"] == 0 and m["cs"]["2"] == pytest.approx(0.6) and m["cs"]["10"] == 1
    assert m["mae_by_decade"] == {"0-9": {"n": 2, "mae": 1.0, "bias": 1.0},
                                  "30-39": {"n": 2, "mae": 2.5, "bias": -2.5},
                                  "60-69": {"n": 1, "mae": 10.0, "bias": -10.0}}


def test_prior_strength_is_chosen_by_the_measure_asked_for():
    """Pooled MAE favours a model right about the crowded middle; age-balanced MAE one right at both ends."""
    from faceage.train.loop import choose_prior_strength

    ages = np.array([25.0] * 20 + [5, 80])
    middle = np.array([25.0] * 20 + [15, 60])  # exact on the 20, 10 and 20 years off at the ends
    ends = np.array([27.0] * 20 + [5, 80])  # 2 years off on the 20, exact at the ends
    pred = {0.0: ends, 1.0: middle}
    assert choose_prior_strength(pred, ages, "mae")[0] == 1.0
    strength, maes, balanced = choose_prior_strength(pred, ages, "balanced_mae")
    assert strength == 0.0 and maes[0.0] > maes[1.0] and balanced[0.0] < balanced[1.0]


def test_age_metrics_by_band_includes_both_ends():
    m = age_metrics(pred=[10, 20, 21, 55, 60], true=[8, 15, 16, 62, 70])
    assert m["mae_by_band"]["13-17"] == {"n": 2, "mae": 5.0, "bias": 5.0}
    assert m["mae_by_band"]["60+"] == {"n": 2, "mae": 8.5, "bias": -8.5}
    assert m["mae_by_band"]["6-12"]["bias"] == 2.0 and "18-24" not in m["mae_by_band"]
