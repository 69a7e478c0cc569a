
import torch

from faceage.core.preprocess import normalize
from faceage.train.augment import augment
from faceage.train.config import AugmentConfig

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _cfg(**probs):
    off = dict.fromkeys(("flip", "rotate", "scale", "shift", "noise", "grey", "jitter", "blur"), 0.0)
    return AugmentConfig(**{**off, **probs})


def _batch(n=6, size=24):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_no_augmentation_is_plain_normalisation():
    x = _batch()
    out = augment(x, _cfg(), MEAN, STD, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, normalize(x, MEAN, STD))


def test_flip_always_mirrors():
    x = _batch()
    out = augment(x, _cfg(flip=1.0), MEAN, STD, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, normalize(x.flip(-1), MEAN, STD))


def test_grey_makes_channels_equal():
    out = augment(_batch(), _cfg(grey=1.0), (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])


def test_all_augmentations_are_seeded_and_bounded():
    cfg = AugmentConfig(flip=0.5, rotate=1.0, scale=1.0, shift=1.0, noise=1.0, grey=0.5, jitter=1.0, blur=0.5)
    a = augment(_batch(), cfg, (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(3))
    b = augment(_batch(), cfg, (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(3))
    c = augment(_batch(), cfg, (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (6, 3, 24, 24) and a.min() >= 0 and a.max() <= 1


def test_small_rotation_keeps_the_image_close():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 8:24, 8:24] = 255
    out = augment(x, _cfg(rotate=1.0, rotate_deg=5.0), (0, 0, 0), (1, 1, 1), torch.Generator().manual_seed(0))
    assert (out - x.float() / 255).abs().mean() < 0.05
