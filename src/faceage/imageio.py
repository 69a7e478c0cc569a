"""Safe image decoding: every input becomes an ``HxWx3`` ``uint8`` RGB array or a clear error.

``load_image`` accepts a path, raw bytes, a PIL image or a ``uint8`` array and

* applies the EXIF orientation (``PIL.ImageOps.exif_transpose``);
* converts greyscale (``1``, ``L``), palette (``P``), alpha (``LA``, ``RGBA``, ``PA``:
  composited on white), ``CMYK``/``YCbCr``/``LAB`` and 16/32-bit (``I;16``, ``I``,
  ``F``: scaled to 8 bit) images to RGB;
* rejects empty files, non-images, truncated images (the whole image must decode;
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set) and images with more than
  ``max_pixels`` pixels (checked from the header, before decoding: decompression bombs).

Failures raise :class:`faceage.errors.ImageError` naming the file, what is wrong
and what to do.
"""
from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceage.errors import ImageError

#: Largest accepted image, in pixels (about 8000 x 6250). Larger files are rejected
#: before decoding; pass ``max_pixels=`` to raise the limit deliberately.
DEFAULT_MAX_PIXELS = 50_000_000

#: File suffixes (lower case, with the dot) treated as images when scanning folders.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_HIGH_DEPTH_MODES = {"I", "F"}


def _describe(src, name: str | None) -> str:
    if name:
        return str(name)
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(src, Image.Image):
        return getattr(src, "filename", None) or "<PIL image>"
    return "<array>"


def _from_array(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageError(f"{label}: array has dtype {arr.dtype}; pass an 8-bit (uint8) image")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        return _to_rgb(Image.fromarray(arr, "RGBA"), label)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageError(f"{label}: array shape {arr.shape} is not HxW or HxWx3; pass an RGB or greyscale image")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: image is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535):
        a8 = (a.astype(np.float32) / 257.0).round()
    elif img.mode == "F" and a.size and np.nanmax(a) <= 1.0:
        a8 = np.nan_to_num(a.astype(np.float32)) * 255.0
    else:  # 32-bit integers or floats beyond 0..1: stretch the actual range to 0..255
        a = np.nan_to_num(a.astype(np.float64))
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        a8 = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(a8, 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode.startswith("I;16") or mode in _HIGH_DEPTH_MODES:
        img = _high_depth_to_l(img).convert("RGB")
    elif mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageError(f"{label}: cannot convert image mode {mode!r} to RGB ({exc}); save it as RGB JPEG or PNG") from exc
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: decoded to an unusable shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _from_pil(img: Image.Image, label: str, max_pixels: int, opened_here: bool) -> np.ndarray:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{label}: image has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise ImageError(
            f"{label}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            f"(possible decompression bomb); downscale it or raise max_pixels if you trust the file"
        )
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({exc}); downscale the image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        what = "truncated or corrupt" if opened_here else "could not be decoded"
        raise ImageError(f"{label}: image is {what} ({exc}); re-export or re-download the file") from exc
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # broken EXIF must not make a good image unreadable
        pass
    return _to_rgb(img, label)


def load_image(src: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``src`` to an ``HxWx3`` ``uint8`` RGB array (see the module docstring).

    ``name`` is used in error messages instead of the path (useful for bytes).
    Raises :class:`ImageError` for anything that is not a complete, acceptable image.
    """
    label = _describe(src, name)
    if isinstance(src, np.ndarray):
        return _from_array(src, label)
    if isinstance(src, Image.Image):
        return _from_pil(src, label, max_pixels, opened_here=False)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageError(f"{label}: empty data (0 bytes); pass the bytes of a JPEG/PNG/WebP image")
        fh = io.BytesIO(data)
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{label}: file not found; check the path")
        if not path.is_file():
            raise ImageError(f"{label}: not a file; pass an image file (or use a folder-aware command)")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: file is empty (0 bytes); re-copy or remove it")
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise ImageError(f"{label}: cannot open ({exc.strerror or exc}); check its permissions") from exc
    else:
        raise ImageError(f"{label}: unsupported input type {type(src).__name__}; pass a path, bytes, PIL image or uint8 array")
    with fh:
        try:
            img = Image.open(fh)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{label}: refused as a possible decompression bomb ({exc}); downscale the image") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"{label}: not a recognised image (supported: JPEG, PNG, WebP, BMP, TIFF); check the file type"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{label}: cannot read image header ({exc}); the file is corrupt or not an image") from exc
        with img:
            return _from_pil(img, label, max_pixels, opened_here=True)


def load_image_scaled(src: ImageSource, min_side: int, *, name: str | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`load_image`, but a JPEG file or bytes is decoded at the smallest DCT
    scale (1/2, 1/4 or 1/8: Pillow's draft mode) whose longest side is still at least
    ``min_side``: face detection on a 12 MP photo needs a fraction of its pixels, and
    decoding at 1/4 costs a fraction of a full decode. A JPEG is opened once.

    Returns the RGB array (EXIF orientation applied) and the full-resolution
    ``(width, height)`` it stands for. Other formats and inputs decode in full; anything
    unreadable raises :class:`ImageError` exactly as :func:`load_image` does.
    """
    if min_side > 0 and isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        label = _describe(src, name)
        try:
            fh = open(src, "rb") if isinstance(src, (str, os.PathLike)) else io.BytesIO(bytes(src))
            with fh, Image.open(fh) as img:
                w, h = img.size
                if img.format == "JPEG" and not (max_pixels and w * h > max_pixels):
                    k = next((k for k in (8, 4, 2) if -(-max(w, h) // k) >= min_side), 1)
                    if k > 1:
                        img.draft("RGB", (w // k, h // k))
                    arr = _from_pil(img, label, 0, opened_here=True)
                    return arr, ((w, h) if arr.shape[1] == img.size[0] else (h, w))
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            pass  # load_image below names the problem
    arr = load_image(src, name=name, max_pixels=max_pixels)
    return arr, (arr.shape[1], arr.shape[0])


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def iter_images(paths: Iterable[str | os.PathLike] | str | os.PathLike, recursive: bool = False) -> Iterator[Path]:
    """Yield image files from files, folders (image suffixes only, sorted) and glob patterns.

    A named file is yielded whatever its suffix (decoding decides); a folder is scanned
    for :data:`IMAGE_SUFFIXES`, recursively when ``recursive``. A path that matches
    nothing raises :class:`ImageError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for item in paths:
        p = Path(item)
        if p.is_file():
            yield p
        elif p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            yield from sorted(f for f in it if f.is_file() and _is_image(f) and not f.name.startswith("."))
        elif glob.has_magic(str(item)):
            hits = sorted(Path(h) for h in glob.glob(str(item), recursive=recursive))
            hits = [h for h in hits if h.is_file() and _is_image(h)]
            if not hits:
                raise ImageError(f"{item}: the pattern matches no image files")
            yield from hits
        else:
            raise ImageError(f"{item}: no such file or folder")
