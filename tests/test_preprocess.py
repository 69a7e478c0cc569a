"""Training and inference feed the network the same pixels: the one preprocessing path."""
import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import fgnet_images
from faceage import AgeEstimator
from faceage.data.cache import build_cache
from faceage.data.manifest import read_manifest
from faceage.data.prepare import prepare
from faceage.core.imageio import load_image
from faceage.core.preprocess import input_batch, normalization, normalize_nchw, resize_crop

DATA = Path(__file__).parent / "data"


def _training_and_inference_inputs(photos: list[Path], tmp: Path, image_format: str):
    """(training-path inputs, inference-path inputs, estimator) for the largest face of each photo:
    prepare -> crop files -> decoded cache, against predict's detect -> align -> preprocess."""
    est = AgeEstimator()
    index = tmp / "photos.csv"
    with open(index, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "age")] + [(str(p), 30) for p in photos])
    prepare("csv", index, tmp / "prepared", spec=est.record.crop, workers=1,
            image_format=image_format, progress=False)
    samples = read_manifest(tmp / "prepared" / "manifest.csv").samples
    cache = build_cache(samples, est.input_size, tmp / "cache", workers=1, quiet=True)
    by_source = {Path(s.source).name: cache.images[k] for k, s in zip(cache.index, samples)}
    train = np.stack([by_source[p.name] for p in photos])
    crops = [est.pipeline.faces(load_image(p), largest=True)[0].crop for p in photos]
    return train, input_batch(crops, est.input_size), est


def test_prepared_png_crops_are_the_pixels_predict_feeds_the_network(tmp_path):
    photos = sorted(DATA.glob("*.jpg"))
    train, infer, est = _training_and_inference_inputs(photos, tmp_path, "png")
    assert train.shape == infer.shape == (len(photos), est.input_size, est.input_size, 3)
    np.testing.assert_array_equal(train, infer)
    np.testing.assert_allclose(est.score_aligned(train).age, est.score_aligned(infer).age, atol=0)


@pytest.mark.parametrize("image_format, max_pixel, max_years", [("png", 0.0, 0.0), ("jpg", 2.0, 1.5)])
def test_training_and_inference_inputs_agree_on_fgnet_faces(tmp_path, image_format, max_pixel, max_years):
    """20 FG-NET portraits: PNG crops (what the bundled model is trained on) are bit-identical; JPEG q95
    crops (the old training path) differ by about 1/255 per pixel, which moves ages by tenths of a year."""
    photos = fgnet_images(20)
    train, infer, est = _training_and_inference_inputs(photos, tmp_path, image_format)
    diff = np.abs(train.astype(np.float64) - infer).mean(axis=(1, 2, 3))
    years = np.abs(est.score_aligned(train).age - est.score_aligned(infer).age)
    print(f"{image_format}: mean |pixel diff| {diff.mean():.3f}/255 (max {diff.max():.3f}); "
          f"age diff mean {years.mean():.3f} max {years.max():.3f} years")
    assert diff.max() <= max_pixel and years.max() <= max_years


def test_resize_and_normalisation_are_the_documented_functions():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    x = resize_crop(crop, 112)
    assert x.shape == (112, 112, 3) and x.dtype == np.uint8
    assert resize_crop(x, 112) is x  # already the input size: untouched
    wide = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_crop(wide, 100), wide[:, 20:120])  # centre square
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    scale, shift = normalization(mean, std)
    got = normalize_nchw(x[None], mean, std)
    want = (x.transpose(2, 0, 1)[None] / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert scale.dtype == shift.dtype == np.float32


def test_torch_normalisation_uses_the_same_constants():
    torch = pytest.importorskip("torch")
    from faceage.core.preprocess import normalize

    x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    np.testing.assert_array_equal(normalize(torch.from_numpy(x), mean, std).numpy(), normalize_nchw(x, mean, std))
