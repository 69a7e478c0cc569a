"""Age metrics on hand-checked numbers."""
import pytest

from faceage.metrics import age_metrics


def test_age_metrics_mae_cs_and_per_decade_bias():
    m = age_metrics(pred=[3, 5, 30, 37, 50], true=[2, 4, 33, 39, 60])
    assert m["n"] == 5 and m["mae"] == pytest.approx((1 + 1 + 3 + 2 + 10) / 5)
    # 5-year bins 0-4 (errors 1, 1), 30-34 (3), 35-39 (2), 60-64 (10): each bin weighs the same
    assert m["mae_balanced"] == pytest.approx((1 + 3 + 2 + 10) / 4)
    assert m["cs"]["0"] == 0 and m["cs"]["2"] == pytest.approx(0.6) and m["cs"]["10"] == 1
    assert m["mae_by_decade"] == {"0-9": {"n": 2, "mae": 1.0, "bias": 1.0},
                                  "30-39": {"n": 2, "mae": 2.5, "bias": -2.5},
                                  "60-69": {"n": 1, "mae": 10.0, "bias": -10.0}}


def test_age_metrics_by_band_includes_both_ends():
    m = age_metrics(pred=[10, 20, 21, 55, 60], true=[8, 15, 16, 62, 70])
    assert m["mae_by_band"]["13-17"] == {"n": 2, "mae": 5.0, "bias": 5.0}
    assert m["mae_by_band"]["60+"] == {"n": 2, "mae": 8.5, "bias": -8.5}
    assert m["mae_by_band"]["6-12"]["bias"] == 2.0 and "18-24" not in m["mae_by_band"]
