"""Safe image decoding: every input becomes an ``HxWx3`` ``uint8`` RGB array or a clear error.

``load_image`` accepts a path, raw bytes, a PIL image or a ``uint8`` array and

* tries only the decoders of :data:`SUPPORTED_FORMATS` (JPEG, PNG, WebP, BMP, TIFF, GIF and,
  where Pillow has it, AVIF), whatever the file is named: an EPS file named ``.jpg``
  never reaches Ghostscript, and PCX, TGA or PPM files are refused;
* applies the EXIF orientation (``PIL.ImageOps.exif_transpose``);
* converts greyscale (``1``, ``L``), palette (``P``), alpha (``LA``, ``RGBA``, ``PA``:
  composited on white), ``CMYK``/``YCbCr``/``LAB`` and 16/32-bit (``I;16``, ``I``,
  ``F``: scaled to 8 bit) images to RGB;
* rejects empty files, non-images, truncated images (the whole image must decode;
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set), images with more than
  ``max_pixels`` pixels and, optionally, images thinner than ``1:max_aspect`` (both
  checked from the header, before decoding: decompression bombs), and headers that
  would cost Pillow seconds of CPU (JPEG garbage, PNGs of millions of chunks).

Failures raise :class:`faceage.errors.ImageError` naming the file, what is wrong
and what to do, with a ``code`` (see the class). The server decodes through
:func:`open_image` and :func:`decode_opened` so that it can budget the memory
(:func:`working_bytes`) between reading the header and decoding. Which files a command line names
(the folder walk) is :mod:`faceage.core.walk`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceage.errors import ImageError
from faceage.core.sniff import JPEG_GARBAGE_LIMIT, PNG_CHUNK_LIMIT, jpeg_header_garbage, png_chunk_count, unsupported_kind

#: Largest accepted image, in pixels (about 8000 x 6250). Larger files are rejected
#: before decoding; pass ``max_pixels=`` to raise the limit deliberately.
DEFAULT_MAX_PIXELS = 50_000_000
MB = 1024 * 1024
#: room for metadata (EXIF, ICC profiles, thumbnails) in a file on top of its pixels
_FILE_OVERHEAD = 16 * MB


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest image file read from disk: ``max_pixels`` stored uncompressed at 4 bytes a pixel
    (8-bit RGBA TIFF or BMP) plus metadata; 207 MB (MiB) at the default pixel limit. A larger file cannot be
    an acceptable image, so it is refused from its size, before a byte of it is read."""
    return 4 * int(max_pixels or DEFAULT_MAX_PIXELS) + _FILE_OVERHEAD

#: Pillow format id -> name shown to users (None: a variant shown under another name;
#: older Pillows have a separate MPO plugin for phone JPEGs)
_WANTED_FORMATS = {"JPEG": "JPEG", "MPO": None, "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF",
                   "GIF": "GIF", "AVIF": "AVIF"}
_SUFFIXES = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",), "BMP": (".bmp",),
             "TIFF": (".tif", ".tiff"), "GIF": (".gif",), "AVIF": (".avif",)}


def _supported_formats() -> tuple[str, ...]:
    Image.init()  # Pillow registers its plugins lazily; open(formats=...) needs them registered
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


#: the only Pillow decoders ever tried, on files, bytes and uploads
SUPPORTED_FORMATS = _supported_formats()
SUPPORTED_TEXT = ", ".join(n for f, n in _WANTED_FORMATS.items() if n and f in SUPPORTED_FORMATS)

#: File suffixes (lower case, with the dot) treated as images when scanning folders.
IMAGE_SUFFIXES = frozenset(s for f in SUPPORTED_FORMATS for s in _SUFFIXES.get(f, ()))

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_HIGH_DEPTH_MODES = {"I", "F"}


class NamedBytes(bytes):
    """An encoded image's bytes with the name its errors give (a batch row's path): decoded like any bytes,
    JPEGs at a reduced scale for detection included."""

    def __new__(cls, data: bytes | bytearray | memoryview, name: str) -> "NamedBytes":
        self = super().__new__(cls, data)
        self.name = str(name)
        return self


def _describe(src, name: str | None) -> str:
    if name:
        return str(name)
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, NamedBytes):
        return src.name
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(src, Image.Image):
        return getattr(src, "filename", None) or "<PIL image>"
    return "<array>"


def _from_array(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageError(f"{label}: array has dtype {arr.dtype}; pass an 8-bit (uint8) image", code="bad_array")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        return _to_rgb(Image.fromarray(arr, "RGBA"), label)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageError(f"{label}: array shape {arr.shape} is not HxW or HxWx3; pass an RGB or greyscale image",
                         code="bad_array")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: image is empty (shape {arr.shape})", code="empty_image")
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
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageError(f"{label}: decoded to an unusable shape {(h, w, 3)}")
    # in strips of about 16 MB: np.asarray of the whole image holds its bytes twice (300 MB at 50 MP)
    arr = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, (16 << 20) // (3 * w))
    for top in range(0, h, rows):
        arr[top:top + rows] = np.asarray(img.crop((0, top, w, min(h, top + rows))), dtype=np.uint8)
    return arr


def check_size(size: tuple[int, int], label: str, max_pixels: int, max_aspect: float | None = None) -> None:
    """Refuse a (width, height) from a header: no pixels, over ``max_pixels``, thinner than ``1:max_aspect``."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{label}: image has no pixels ({w}x{h})", code="empty_image")
    if max_aspect and max(w, h) > max_aspect * min(w, h):
        raise ImageError(f"{label}: image is {w}x{h}, more than {max_aspect:g} times longer than wide, too thin "
                         "to hold a face; crop it to the part with the face", code="image_too_thin")
    if max_pixels and w * h > max_pixels:
        raise ImageError(
            f"{label}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            f"(possible decompression bomb); downscale it or raise max_pixels if you trust the file",
            code="too_many_pixels")


#: the most :func:`working_bytes` counts per pixel
MAX_BYTES_PER_PIXEL = 4 + 3 + 4


def working_bytes(img: Image.Image) -> int:
    """Bytes that decoding ``img`` and handing it to detection takes at the peak (from the header alone):
    Pillow's decoded image, the RGB array and the detector's copy of it (Pillow stores RGB as 4 bytes/pixel)."""
    w, h = img.size
    mode = img.mode
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return w * h * (per_pixel + 3 + 4)


def open_image(data: bytes, *, name: str = "<bytes>") -> Image.Image:
    """Read the header of encoded image bytes with the :data:`SUPPORTED_FORMATS` decoders only.

    Nothing is decoded yet, so the size can be checked first (:func:`decode_opened`).
    Any failure is an :class:`ImageError` with a code; no other exception leaves.
    """
    if not data:
        raise ImageError(f"{name}: empty data (0 bytes); pass the bytes of a {SUPPORTED_TEXT} image",
                         code="empty_image")
    if data[:2] == b"\xff\xd8" and jpeg_header_garbage(data) > JPEG_GARBAGE_LIMIT:
        raise ImageError(f"{name}: the JPEG header is corrupt (over {JPEG_GARBAGE_LIMIT:,} bytes of garbage "
                         "between markers); re-export or re-send the file")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and png_chunk_count(data) > PNG_CHUNK_LIMIT:
        raise ImageError(f"{name}: the PNG has over {PNG_CHUNK_LIMIT:,} chunks; re-export it with a normal encoder")
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc}); downscale the image",
                         code="too_many_pixels") from None
    except UnidentifiedImageError:
        kind = unsupported_kind(data)
        if kind is not None:
            raise ImageError(f"{name}: {kind} files are not supported; convert the photo to one of "
                             f"{SUPPORTED_TEXT}", code="unsupported_format") from None
        raise ImageError(f"{name}: not a recognised image (supported: {SUPPORTED_TEXT}); check the file type",
                         code="not_an_image") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a header a plugin chokes on is still a bad file
        raise ImageError(f"{name}: cannot read the image header ({type(exc).__name__}: {exc}); the file is "
                         "corrupt or not an image") from None


def decode_opened(img: Image.Image, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_aspect: float | None = None) -> np.ndarray:
    """Decode an image from :func:`open_image` to RGB, after checking its size (and closes it)."""
    with img:
        return _from_pil(img, name, max_pixels, max_aspect, opened_here=True)


def _from_pil(img: Image.Image, label: str, max_pixels: int, max_aspect: float | None,
              opened_here: bool) -> np.ndarray:
    if img.format is not None and img.format not in SUPPORTED_FORMATS:
        raise ImageError(f"{label}: {img.format} images are not supported; convert it to one of {SUPPORTED_TEXT}",
                         code="unsupported_format")
    check_size(img.size, label, max_pixels, max_aspect)
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({exc}); downscale the image",
                         code="too_many_pixels") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        what = "truncated or corrupt" if opened_here else "could not be decoded"
        raise ImageError(f"{label}: {img.format or 'the'} image is {what} ({type(exc).__name__}: {exc}); "
                         "re-export or re-download the file") from exc
    try:  # in place on an image opened here: a copy of a 50 MP photo is 200 MB more
        img = ImageOps.exif_transpose(img, in_place=opened_here) or img
    except Exception:  # broken EXIF must not make a good image unreadable
        pass
    return _to_rgb(img, label)


def read_image_file(path: Path, label: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of an image file, or an :class:`ImageError`: missing, not a file, unreadable, empty, or
    larger than :func:`max_file_bytes` (checked from its size before reading, and again while reading)."""
    label = str(path) if label is None else label
    limit = max_file_bytes(max_pixels)
    if not path.exists():
        kind = "dangling symbolic link" if path.is_symlink() else "file not found"
        raise ImageError(f"{label}: {kind}; check the path", code="file_not_found")
    if not path.is_file():
        raise ImageError(f"{label}: not a file; pass an image file (or use a folder-aware command)",
                         code="file_not_found")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise _file_too_large(label, size, limit)
            data = fh.read(limit + 1)  # the file may grow after fstat
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc}); check its permissions",
                         code="unreadable_file") from exc
    if len(data) > limit:
        raise _file_too_large(label, None, limit)
    if not data:
        raise ImageError(f"{label}: file is empty (0 bytes); re-copy or remove it", code="empty_image")
    return data


def _file_too_large(label: str, size: int | None, limit: int) -> ImageError:
    what = f"{size / MB:,.0f} MB" if size is not None else "growing while read and now"
    return ImageError(f"{label}: the file is {what}, over the {limit / MB:,.0f} MB that an image of at most "
                      "max_pixels can take; it is not a photo this tool reads (raise max_pixels if it is one)",
                      code="file_too_large")


def load_image(src: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_aspect: float | None = None) -> np.ndarray:
    """Decode ``src`` to an ``HxWx3`` ``uint8`` RGB array (see the module docstring).

    ``name`` is used in error messages instead of the path (useful for bytes);
    ``max_aspect``: refuse images whose long side is more than this many times the short one.
    Raises :class:`ImageError` for anything that is not a complete, acceptable image.
    """
    label = _describe(src, name)
    if isinstance(src, np.ndarray):
        return _from_array(src, label)
    if isinstance(src, Image.Image):
        return _from_pil(src, label, max_pixels, max_aspect, opened_here=False)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        data = read_image_file(Path(src), label, max_pixels)
    else:
        raise ImageError(f"{label}: unsupported input type {type(src).__name__}; pass a path, bytes, PIL image or "
                         "uint8 array", code="bad_array")
    return decode_opened(open_image(data, name=label), name=label, max_pixels=max_pixels, max_aspect=max_aspect)


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
        data = read_image_file(Path(src), label, max_pixels) if isinstance(src, (str, os.PathLike)) else bytes(src)
        img = open_image(data, name=label)  # the same decoders and header checks as load_image
        w, h = img.size
        if img.format == "JPEG":
            k = next((k for k in (8, 4, 2) if -(-max(w, h) // k) >= min_side), 1)
            if k > 1 and not (max_pixels and w * h > max_pixels):  # an over-limit one fails in decode_opened
                img.draft("RGB", (w // k, h // k))
        stored = img.size  # as decoded, before the EXIF turn (done in place)
        arr = decode_opened(img, name=label, max_pixels=max_pixels)
        return arr, ((w, h) if arr.shape[:2] == stored[::-1] else (h, w))
    arr = load_image(src, name=name, max_pixels=max_pixels)
    return arr, (arr.shape[1], arr.shape[0])
