"""Test-time views: the numpy zoom against torch's grid_sample, and their use in AgeEstimator."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceage.estimator import AgeEstimator
from faceage.core.views import TTA, average_views, make_views, zoom


def _reference_zoom(batch: np.ndarray, factor: float) -> np.ndarray:
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    theta = torch.tensor([[factor, 0, 0], [0, factor, 0]], dtype=torch.float32).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.5, 1.7])
@pytest.mark.parametrize("shape", [(3, 24, 24, 3), (2, 20, 31, 3)])
def test_zoom_matches_grid_sample(factor, shape):
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = zoom(batch, factor)
    assert out.dtype == np.uint8 and out.shape == batch.shape
    assert np.abs(out.astype(np.float32) - _reference_zoom(batch, factor)).max() <= 0.5 + 1e-3  # rounding only


def test_zoom_keeps_the_centre_and_magnifies():
    img = np.zeros((1, 20, 20, 3), np.uint8)
    img[:, 8:12, 8:12] = 255  # a 4-px square in the middle
    assert (zoom(img, 0.5)[0, :, :, 0] > 127).sum() == 64  # twice as wide: 8 x 8
    assert zoom(img, 1.0) is img


def test_views_order_and_average():
    batch = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    views = make_views(batch, "full")
    assert views.shape == (len(TTA["full"]) * 2, 16, 16, 3)
    np.testing.assert_array_equal(views[:2], zoom(batch, 0.95))
    np.testing.assert_array_equal(views[2:4], zoom(batch, 0.95)[:, :, ::-1])
    np.testing.assert_array_equal(make_views(batch, "flip")[2:], batch[:, :, ::-1])
    assert make_views(batch, "none") is batch
    logits = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    reg = np.arange(8, dtype=np.float32)
    lg, rg = average_views(logits, reg, "full")
    np.testing.assert_allclose(rg, [3.0, 4.0])  # mean of rows 0,2,4,6 and 1,3,5,7
    np.testing.assert_allclose(lg[0], logits[0::2].mean(0))
    with pytest.raises(ValueError, match="tta must be one of"):
        make_views(batch, "all")


def test_estimator_tta(small_model):
    crops = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    outs = {}
    for tta in TTA:
        est = AgeEstimator(small_model, backend="torch", tta=tta)
        sc = est.score_aligned(crops)
        outs[tta] = sc.logits, sc.reg
        assert outs[tta][0].shape == (3, 101) and outs[tta][1].shape == (3,)
    one = AgeEstimator(small_model, backend="torch", tta="none")
    a, b = one.score_aligned(crops), one.score_aligned(np.ascontiguousarray(crops[:, :, ::-1]))
    (l1, r1), (l2, r2) = (a.logits, a.reg), (b.logits, b.reg)
    np.testing.assert_allclose(outs["flip"][0], (l1 + l2) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["flip"][1], (r1 + r2) / 2, rtol=1e-5, atol=1e-5)
    assert not np.allclose(outs["full"][0], outs["flip"][0])
    with pytest.raises(ValueError, match="tta must be one of"):
        AgeEstimator(small_model, backend="torch", tta="mirror")


def _views_one_by_one(batch: np.ndarray, tta: str) -> np.ndarray:
    """The definition: each view zoomed, then mirrored, then stacked (make_views fuses these steps)."""
    out = []
    for factor, mirror in TTA[tta]:
        v = zoom(batch, factor)
        out.append(v[:, :, ::-1] if mirror else v)
    return np.concatenate(out)


@pytest.mark.parametrize("tta", list(TTA))
def test_views_are_exactly_zoom_then_mirror(tta):
    """Mirroring folded into the column reads, one vertical pass for all zooms: the same pixels to the bit."""
    rng = np.random.default_rng(3)
    for shape in [(1, 112, 112, 3), (3, 150, 150, 3), (2, 17, 17, 3)]:
        batch = rng.integers(0, 256, shape, dtype=np.uint8)
        batch[:, : shape[1] // 2] //= 3  # smooth and sharp regions, not just noise
        np.testing.assert_array_equal(make_views(batch, tta), _views_one_by_one(batch, tta))
    mirrored = batch[:, :, ::-1]  # a view with negative strides: read as it is, written into a fresh array
    np.testing.assert_array_equal(zoom(mirrored, 1.05), zoom(np.ascontiguousarray(mirrored), 1.05))
    np.testing.assert_array_equal(make_views(mirrored, tta), make_views(np.ascontiguousarray(mirrored), tta))


def test_one_crop_batch_owns_writable_memory_and_empty_batches_zoom(small_model):
    """One crop skips np.stack's copy, but the batch stays writable (torch.from_numpy warns on read-only
    arrays), a read-only caller's crop is copied, and an empty batch zooms to an empty batch."""
    from faceage.core.preprocess import input_batch

    crop = np.random.default_rng(6).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    assert input_batch([crop], 112).flags.writeable
    frozen = crop[:112, :112].copy()
    frozen.flags.writeable = False
    assert input_batch([frozen], 112).flags.writeable
    assert zoom(np.zeros((0, 8, 8, 3), np.uint8), 1.05).shape == (0, 8, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AgeEstimator(small_model, backend="torch", tta="none").predict_aligned(crop)[0].age is not None
