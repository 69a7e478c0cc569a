import numpy as np
import pytest
from PIL import Image

from faceage.errors import ImageError
from faceage.core.imageio import IMAGE_SUFFIXES, load_image
from faceage.core.walk import iter_images


def _rgb(w=40, h=30):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (200, 10, 10)  # left half red
    a[:, w // 2 :] = (10, 10, 200)
    return a


def _save(img, path, fmt=None, **kw):
    img.save(path, format=fmt, **kw)
    return path


def test_rgb_path_bytes_pil_array(tmp_path):
    p = _save(Image.fromarray(_rgb()), tmp_path / "a.png")
    for src in (p, str(p), p.read_bytes(), Image.open(p), _rgb()):
        out = load_image(src)
        assert out.shape == (30, 40, 3) and out.dtype == np.uint8
        assert tuple(out[0, 0]) == (200, 10, 10)


def test_grey_array_and_bad_array():
    assert load_image(np.full((5, 6), 7, np.uint8)).shape == (5, 6, 3)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((5, 6, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((5, 6, 2), np.uint8))


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(_rgb(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    out = load_image(p)
    assert out.shape == (40, 30, 3)  # transposed
    # after a 90 deg clockwise turn the left (red) half is on top
    assert out[2, 15, 0] > 150 and out[-3, 15, 2] > 150


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_modes(tmp_path, mode):
    img = Image.fromarray(_rgb()).convert(mode)
    out = load_image(_save(img, tmp_path / "g.png"))
    assert out.shape == (30, 40, 3)
    assert (out[..., 0] == out[..., 1]).all()


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((10, 10, 4), np.uint8)
    a[:5, :, :] = (255, 0, 0, 255)  # opaque red top, transparent bottom
    out = load_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "t.png"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[9, 9]) == (255, 255, 255)
    la = Image.fromarray(a, "RGBA").convert("LA")
    assert tuple(load_image(_save(la, tmp_path / "la.png"))[9, 9]) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.fromarray(_rgb()).convert("P", palette=Image.ADAPTIVE, colors=4)
    out = load_image(_save(p, tmp_path / "p.png"))
    assert out.shape == (30, 40, 3) and out[0, 0, 0] > 150
    p.info["transparency"] = p.getpixel((0, 0))
    out = load_image(_save(p, tmp_path / "pt.png", transparency=p.getpixel((0, 0))))
    assert tuple(out[0, 0]) == (255, 255, 255)
    gif = load_image(_save(p, tmp_path / "p.gif"))
    assert gif.shape == (30, 40, 3)


def test_cmyk_jpeg(tmp_path):
    img = Image.fromarray(_rgb()).convert("CMYK")
    out = load_image(_save(img, tmp_path / "c.jpg", quality=95))
    assert out.shape == (30, 40, 3)
    assert out[5, 5, 0] > 150 and out[5, 5, 2] < 80


def test_16_bit_png_scaled(tmp_path):
    a = np.full((8, 9), 65535, np.uint16)
    a[:, :4] = 257 * 100
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    out = load_image(_save(img, tmp_path / "d.png"))
    assert out.shape == (8, 9, 3)
    assert out[0, 8, 0] == 255 and out[0, 0, 0] == 100
    # 32-bit integer mode too
    out = load_image(Image.fromarray(a.astype(np.int32)))
    assert out[0, 0, 0] == 100


def test_truncated_rejected(tmp_path):
    rng = np.random.default_rng(0)
    p = _save(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), tmp_path / "x.jpg", quality=90)
    data = p.read_bytes()
    bad = tmp_path / "trunc.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="trunc.jpg.*truncated"):
        load_image(bad)
    png = _save(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), tmp_path / "x.png")
    (tmp_path / "t.png").write_bytes(png.read_bytes()[:-5000])
    with pytest.raises(ImageError, match="t.png"):
        load_image(tmp_path / "t.png")


def test_empty_missing_and_non_image(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg.*empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    (tmp_path / "notes.jpg").write_text("hello, not a picture")
    with pytest.raises(ImageError, match="notes.jpg.*not a recognised image"):
        load_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="<upload>"):
        load_image(b"GIF89a garbage", name="<upload>")


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    p = _save(Image.new("L", (400, 300)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="big.png.*120,000 pixels.*decompression bomb"):
        load_image(p, max_pixels=100_000)
    # a header claiming a huge image (PIL's own bomb check also fires)
    huge = _save(Image.new("1", (20000, 20000)), tmp_path / "huge.png")
    with pytest.raises(ImageError, match="huge.png"):
        load_image(huge)
    assert load_image(p, max_pixels=200_000).shape == (300, 400, 3)


def test_iter_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.JPG", "a.png", "sub/c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in iter_images(tmp_path)] == ["a.png", "b.JPG"]
    assert [p.name for p in iter_images(tmp_path, recursive=True)] == ["a.png", "b.JPG", "c.webp"]
    assert [p.name for p in iter_images([str(tmp_path / "*.png"), tmp_path / "notes.txt"])] == ["a.png", "notes.txt"]
    with pytest.raises(ImageError):
        list(iter_images(tmp_path / "nothing"))
    assert ".jpg" in IMAGE_SUFFIXES and ".tiff" in IMAGE_SUFFIXES


# --------------------------------------------------------------------------- only the documented formats
@pytest.mark.parametrize("fmt, suffix", [("PCX", ".jpg"), ("TGA", ".png"), ("PPM", ".jpg"), ("EPS", ".jpg"),
                                         ("ICO", ".png"), ("SGI", ".webp")])
def test_undocumented_formats_are_never_decoded(tmp_path, fmt, suffix):
    """Whatever the name says, only the SUPPORTED_FORMATS decoders run (an EPS never reaches Ghostscript)."""
    from faceage.core.imageio import SUPPORTED_TEXT

    path = tmp_path / f"photo{suffix}"
    if fmt == "EPS":
        path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    else:
        Image.fromarray(_rgb()).save(path, format=fmt)
    for src in (path, path.read_bytes()):
        with pytest.raises(ImageError, match=f"not (supported|a recognised image).*{SUPPORTED_TEXT}") as err:
            load_image(src)
        assert err.value.code in ("unsupported_format", "not_an_image")
    with Image.open(path) as opened:  # a PIL image opened elsewhere is refused too
        if opened.format == fmt:
            with pytest.raises(ImageError, match="not supported") as err:
                load_image(opened)
            assert err.value.code == "unsupported_format"


def test_documented_formats_decode_and_are_scanned(tmp_path):
    from faceage.core.imageio import SUPPORTED_FORMATS

    for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif"),
                        ("GIF", ".gif")):
        assert fmt in SUPPORTED_FORMATS and suffix in IMAGE_SUFFIXES
        path = _save(Image.fromarray(_rgb()), tmp_path / f"a{suffix}", fmt)
        assert load_image(path).shape == (30, 40, 3)
    assert ".pcx" not in IMAGE_SUFFIXES and ".tga" not in IMAGE_SUFFIXES


def test_error_codes(tmp_path):
    cases = [(tmp_path / "missing.jpg", "file_not_found"), (b"", "empty_image"), (b"hello world", "not_an_image"),
             (b"%PDF-1.4 ...", "unsupported_format"), (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "corrupt_image"),
             (np.zeros((4, 4, 3), np.float32), "bad_array")]
    for src, code in cases:
        with pytest.raises(ImageError) as err:
            load_image(src)
        assert err.value.code == code, (src, err.value)
    big = _save(Image.new("L", (500, 400)), tmp_path / "big.png")
    with pytest.raises(ImageError) as err:
        load_image(big, max_pixels=100_000)
    assert err.value.code == "too_many_pixels"


@pytest.mark.parametrize("w, h", [(10, 10000), (8, 4300), (50000, 12)])
def test_max_aspect_refuses_thin_images_from_the_header(tmp_path, w, h):
    path = _save(Image.new("L", (w, h)), tmp_path / "thin.png")
    assert load_image(path).shape == (h, w, 3)  # no limit by default: detection decides
    with pytest.raises(ImageError, match=r"thin.png: image is \d+x\d+, more than 20 times") as err:
        load_image(path, max_aspect=20)
    assert err.value.code == "image_too_thin"


def test_iter_images_reports_bad_paths_and_goes_on(tmp_path, monkeypatch):
    import os

    (tmp_path / "d").mkdir()
    good = _save(Image.fromarray(_rgb()), tmp_path / "d" / "a.png")
    (tmp_path / "d" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    locked = tmp_path / "d" / "locked"
    locked.mkdir()
    _save(Image.fromarray(_rgb()), locked / "b.png")
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root, so the folder's listing fails here instead
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    problems = []
    found = list(iter_images([tmp_path / "missing.jpg", tmp_path / "d", str(tmp_path / "*.gif")], recursive=True,
                             on_error=lambda path, exc: problems.append((path, exc.code, str(exc)))))
    assert found == [good]
    assert [(p, c) for p, c, _ in problems] == [
        (str(tmp_path / "missing.jpg"), "file_not_found"), (str(tmp_path / "d" / "dangling.jpg"), "file_not_found"),
        (str(locked), "unreadable_file"), (str(tmp_path / "*.gif"), "file_not_found")]
    assert "dangling symbolic link" in problems[1][2] and "Permission denied" in problems[2][2]
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        list(iter_images([tmp_path / "missing.jpg", tmp_path / "d"]))


def test_a_huge_file_is_refused_from_its_size_before_reading(tmp_path):
    import tracemalloc

    from faceage.core.imageio import load_image_scaled, max_file_bytes

    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:  # 1.5 GB, sparse: no disk used
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(1536 * 1024 * 1024)
    tracemalloc.start()
    try:
        for load in (load_image, lambda p: load_image_scaled(p, 800)):
            with pytest.raises(ImageError, match=r"huge.jpg: the file is 1,536 MB, over the 207 MB") as err:
                load(huge)
            assert err.value.code == "file_too_large"
        assert tracemalloc.get_traced_memory()[1] < 8 * 1024 * 1024  # not read into memory
    finally:
        tracemalloc.stop()
    assert max_file_bytes(100_000) < max_file_bytes()  # the limit follows max_pixels
    small = _save(Image.fromarray(_rgb()), tmp_path / "ok.png")
    assert load_image(small, max_pixels=1200).shape == (30, 40, 3)
