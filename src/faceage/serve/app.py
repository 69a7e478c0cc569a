"""The FastAPI application behind ``faceage serve``.

``create_app(model)`` loads the model once and returns an ASGI app with

* ``POST /v1/estimate``: the photo as a multipart upload (field ``file``) or as the
  raw request body -> ``{faces, width, height, model, elapsed_ms}``; each face has
  the schema of :meth:`faceage.estimator.FaceAge.to_dict` (and of
  ``faceage predict --json``). Query options ``largest``, ``min_face``, ``fallback``.
* ``GET /healthz``, ``GET /v1/model`` (summary of the model's record), ``/docs``
  (OpenAPI) and ``GET /`` (the web page in ``static/``).

Hardening. The body is never read whole before its size is known: a
``Content-Length`` over the limit is refused before reading, and the stream is
counted chunk by chunk (chunked uploads are cut off as soon as they pass the limit).
Decoding accepts JPEG, PNG, WebP, BMP, TIFF, GIF and (where Pillow has it) AVIF
only (other Pillow plugins are never tried on uploads), checks the pixel count from the header before decoding
(decompression bombs) and turns every decoder failure into a 4xx. Decoding and
inference run in worker threads, at most ``concurrency`` at a time, never on the
event loop. Every error is JSON ``{"detail": message, "code": word}``.

The face detector runs without dlib's CNN pass by default: on a photo without a
face that pass costs up to tens of seconds of CPU, which would let any client
stall the server; ``detector_cnn=True`` (``faceage serve --cnn``) turns it on.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

import faceage
from faceage.errors import ImageError
from faceage.imageio import DEFAULT_MAX_PIXELS, load_image

log = logging.getLogger("faceage.serve")

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD = 10 * MB
#: room for the multipart framing (boundaries, part headers, small fields) on top of the file
MULTIPART_OVERHEAD = 64 * 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: dlib HOG + landmarks with the recovery passes but without the CNN pass (see the module docstring)
SERVE_DETECTOR = "dlib-serve"
#: environment variable carrying create_app's keyword arguments to uvicorn worker processes
ENV_OPTIONS = "FACEAGE_SERVE_OPTIONS"

_WANTED_FORMATS = {"JPEG": "JPEG", "MPO": None, "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF",
                   "GIF": "GIF", "AVIF": "AVIF"}  # Pillow format id -> name shown to users


def _supported_formats() -> tuple[str, ...]:
    Image.init()  # Pillow registers its plugins lazily; open(formats=...) needs them registered
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


#: the only Pillow decoders tried on uploads (older Pillows have a separate MPO plugin for phone JPEGs)
SUPPORTED_FORMATS = _supported_formats()
SUPPORTED_TEXT = ", ".join(n for f, n in _WANTED_FORMATS.items() if n and f in SUPPORTED_FORMATS)
#: Content-Types that say "this is not an image" outright
_NON_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded",
                    "application/pdf", "application/zip", "audio/", "video/", "font/")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ApiError(Exception):
    """A client error: HTTP ``status``, a machine-readable ``code`` and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ------------------------------------------------------------------------------------ schemas
class Face(BaseModel):
    box: list[int] = Field(description="left, top, right, bottom in image pixels (after EXIF rotation)")
    eyes: list[list[float]] = Field(description="eye centres [[x, y], [x, y]], image-left eye first")
    age: float = Field(description="estimated age in years")
    age_interval: list[float] = Field(description="80% interval of the predicted age distribution")
    score: float = Field(description="detector confidence (0 for a fallback crop)")
    fallback: bool = Field(description="true: no face was found and a centre crop was scored")


class EstimateResponse(BaseModel):
    faces: list[Face] = Field(description="faces, largest first; [] when none is found")
    width: int = Field(description="image width in pixels (after EXIF rotation)")
    height: int = Field(description="image height in pixels (after EXIF rotation)")
    model: str = Field(description="name of the model that answered (see GET /v1/model)")
    elapsed_ms: float = Field(description="decoding + detection + inference time, milliseconds")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong and what to do")
    code: str = Field(description="machine-readable error kind, e.g. not_an_image, too_large")


class Health(BaseModel):
    status: str
    model: str


_ERRORS = {
    400: {"model": ErrorResponse, "description": "empty body, malformed multipart or bad header"},
    413: {"model": ErrorResponse, "description": "upload over the byte limit, or image over the pixel limit"},
    415: {"model": ErrorResponse, "description": "not an image type this server decodes"},
    422: {"model": ErrorResponse, "description": "not an image, a corrupt/truncated image, or a bad query option"},
}

_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "required": True,
    "description": (f"The photo ({SUPPORTED_TEXT}): either multipart/form-data with a file field named "
                    "'file', or the raw image bytes as the body."),
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        "image/jpeg": _IMAGE_BODY,
        "image/png": _IMAGE_BODY,
        "image/webp": _IMAGE_BODY,
        "application/octet-stream": _IMAGE_BODY,
    },
}


# ------------------------------------------------------------------------------------ decoding
def _unsupported_kind(data: bytes) -> str | None:
    """Name of a recognisable file type this server does not decode, if ``data`` starts like one."""
    head = data[:64]
    if head.startswith(b"%PDF"):
        return "PDF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "AVIF"
        return "MP4/QuickTime video"
    text = data[:1024].lstrip().lower()
    if text.startswith(b"<?xml") or text.startswith(b"<svg") or b"<svg" in text:
        return "SVG"
    if text.startswith(b"<!doctype html") or text.startswith(b"<html"):
        return "HTML"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head.startswith(b"%!PS"):
        return "PostScript"
    if head.startswith(b"8BPS"):
        return "Photoshop PSD"
    return None


def _non_image_content_type(content_type: str | None) -> bool:
    ct = (content_type or "").split(";")[0].strip().lower()
    return bool(ct) and ct.startswith(_NON_IMAGE_TYPES)


#: bytes of non-marker garbage tolerated in a JPEG header; Pillow skips garbage one byte at a time in Python
#: (about 0.5 s per MB), so a 10 MB "JPEG" of zeros would cost seconds of CPU per request
JPEG_GARBAGE_LIMIT = 256 * 1024


def _jpeg_header_garbage(data: bytes) -> int:
    """Bytes Pillow would have to skip one by one while looking for JPEG markers before the scan data."""
    pos, n, garbage = 2, len(data), 0
    while pos < n and garbage <= JPEG_GARBAGE_LIMIT:
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            garbage += (n if nxt < 0 else nxt) - pos
            if nxt < 0:
                break
            pos = nxt
            continue
        if pos + 1 >= n:
            break
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker in (0xDA, 0xD9):  # start of scan / end of image: the header is over
            break
        elif marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
        else:
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            pos += 2 + max(length, 2)
    return garbage


#: PNG chunks tolerated in one file; Pillow handles each chunk in Python, so millions of empty chunks
#: (12 bytes each) would cost tens of seconds of CPU; real files have a few to a few thousand
PNG_CHUNK_LIMIT = 20_000


def _png_chunk_count(data: bytes) -> int:
    """Number of chunks in a PNG, counting no further than just past :data:`PNG_CHUNK_LIMIT`."""
    pos, n, count = 8, len(data), 0
    while pos + 8 <= n and count <= PNG_CHUNK_LIMIT:
        length = int.from_bytes(data[pos:pos + 4], "big")
        count += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return count


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, content_type: str | None = None,
                 name: str = "upload") -> np.ndarray:
    """Decode uploaded bytes to an ``HxWx3`` uint8 RGB array, or raise :class:`ApiError` (4xx).

    Any exception raised while decoding is the file's fault and becomes a 4xx; this
    function never lets another exception out (the fuzz tests hold it to that).
    """
    if not data:
        raise ApiError(400, "empty_body",
                       f"{name}: the body is empty (0 bytes); send the photo's bytes ({SUPPORTED_TEXT})")
    if data[:2] == b"\xff\xd8" and _jpeg_header_garbage(data) > JPEG_GARBAGE_LIMIT:
        raise ApiError(422, "corrupt_image", f"{name}: the JPEG header is corrupt (over {JPEG_GARBAGE_LIMIT:,} "
                       "bytes of garbage between markers); re-export or re-send the file")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and _png_chunk_count(data) > PNG_CHUNK_LIMIT:
        raise ApiError(422, "corrupt_image", f"{name}: the PNG has over {PNG_CHUNK_LIMIT:,} chunks; "
                       "re-export it with a normal encoder")
    try:
        img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_many_pixels", f"{name}: refused as a possible decompression bomb ({exc}); "
                       "downscale the image") from None
    except UnidentifiedImageError:
        kind = _unsupported_kind(data)
        if kind is not None:
            raise ApiError(415, "unsupported_type", f"{name}: {kind} files are not supported; "
                           f"convert the photo to one of {SUPPORTED_TEXT}") from None
        if _non_image_content_type(content_type):
            raise ApiError(415, "unsupported_type", f"{name}: Content-Type {content_type.split(';')[0]} is not "
                           f"an image; send the photo ({SUPPORTED_TEXT}) as the body or as multipart field "
                           "'file'") from None
        raise ApiError(422, "not_an_image", f"{name}: not a recognised image (supported: {SUPPORTED_TEXT}); "
                       "check the file type") from None
    except Exception as exc:  # noqa: BLE001 - a header a plugin chokes on is still a bad file
        raise ApiError(422, "corrupt_image", f"{name}: cannot read the image header "
                       f"({type(exc).__name__}: {exc}); the file is corrupt or not an image") from None
    try:
        with img:
            return load_image(img, name=name, max_pixels=max_pixels)
    except ImageError as exc:
        msg = str(exc)
        if "over the limit" in msg or "decompression bomb" in msg:
            raise ApiError(413, "too_many_pixels", msg) from None
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        if "could not be decoded" in msg:
            msg = f"{name}: the {img.format} image is truncated or corrupt{detail}; re-export or re-send the file"
        raise ApiError(422, "corrupt_image", msg) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on client bytes is a 4xx, not a 500
        raise ApiError(422, "corrupt_image", f"{name}: the image could not be decoded ({type(exc).__name__}: "
                       f"{exc}); re-export or re-send the file") from None


# ------------------------------------------------------------------------------------ uploads
async def _limited_stream(request: Request, limit: int, max_upload: int):
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, "too_large", f"upload is over the limit of {max_upload:,} bytes "
                           f"({max_upload / MB:g} MB); send a smaller image")
        if chunk:
            yield chunk


async def read_upload(request: Request, max_upload: int) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and declared type, reading at most ``max_upload`` (+ multipart framing)."""
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    multipart = media == "multipart/form-data"
    limit = max_upload + (MULTIPART_OVERHEAD if multipart else 0)
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "bad_request", f"Content-Length {length[:40]!r} is not a byte count") from None
        if n > limit:
            raise ApiError(413, "too_large", f"upload is {n:,} bytes, over the limit of {max_upload:,} bytes "
                           f"({max_upload / MB:g} MB); send a smaller image")
    stream = _limited_stream(request, limit, max_upload)
    if not multipart:
        chunks = [chunk async for chunk in stream]
        return b"".join(chunks), content_type
    try:
        form = await MultiPartParser(request.headers, stream, max_files=4, max_fields=16,
                                     max_part_size=64 * 1024).parse()
    except (ApiError, ClientDisconnect):
        raise
    except Exception as exc:  # noqa: BLE001 - MultiPartException, parser errors on garbage framing
        raise ApiError(400, "bad_multipart", f"malformed multipart/form-data body ({exc}); send the photo "
                       "as a file field named 'file' (curl -F file=@photo.jpg)") from None
    try:
        upload = None
        for key in ("file", "image"):
            value = form.get(key)
            if value is not None and not isinstance(value, str):
                upload = value
                break
        if upload is None:
            upload = next((v for _, v in form.multi_items() if not isinstance(v, str)), None)
        if upload is None:
            raise ApiError(400, "no_file", "the multipart body has no file part; send the photo as a file field "
                           "named 'file' (curl -F file=@photo.jpg)")
        data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            raise ApiError(413, "too_large", f"uploaded file is over the limit of {max_upload:,} bytes "
                           f"({max_upload / MB:g} MB); send a smaller image")
        return data, upload.content_type
    finally:
        await form.close()


# ------------------------------------------------------------------------------------ the app
def _register_serve_detector() -> None:
    from faceage.face.detect import DETECTORS, DlibDetector, register_detector

    if SERVE_DETECTOR not in DETECTORS:
        register_detector(SERVE_DETECTOR)(lambda **options: DlibDetector(**{"cnn": False, **options}))


def _sha256(path: Path) -> str | None:
    try:
        from faceage.weights import resolve_model_path

        h = hashlib.sha256()
        with open(resolve_model_path(path), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except Exception:  # noqa: BLE001 - informational only
        return None


def model_summary(est, name: str) -> dict[str, Any]:
    rec = est.record
    spec = dict(rec.model)
    arch = f"{spec.get('arch', '?')}_{float(spec.get('width', 0)):g}x"
    return {
        "name": name,
        "arch": arch,
        "backend": getattr(est.backend, "name", type(est.backend).__name__),
        "sha256": _sha256(est.model_path),
        "input_size": rec.input_size,
        "num_classes": spec.get("num_classes"),
        "ages": [0, int(spec.get("num_classes", 101)) - 1],
        "estimate": rec.estimate,
        "mean": list(rec.mean),
        "std": list(rec.std),
        "crop": rec.crop,
        "spec": spec,
        "training": rec.training,
        "tta": est.tta,
        "faceage_version": faceage.__version__,
    }


def create_app(model=None, *, max_upload: int = DEFAULT_MAX_UPLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
               concurrency: int | None = None, backend: str = "auto", detector_cnn: bool = False,
               tta: str = "zoomflip", warmup: bool = True) -> FastAPI:
    """The ASGI app. ``model``: a model file or run folder (the bundled model when None), or a
    ready :class:`~faceage.estimator.AgeEstimator`. The model is loaded here, once.

    ``max_upload``: largest accepted upload in bytes; ``max_pixels``: largest accepted image
    in pixels; ``concurrency``: decodes + inferences running at once (default: CPU count,
    at most 4); ``detector_cnn``: allow dlib's slow CNN pass on photos where HOG finds no face;
    ``tta``: test-time views per face (see :class:`~faceage.estimator.AgeEstimator`).
    """
    from faceage.estimator import AgeEstimator

    if isinstance(model, AgeEstimator):
        est = model
    else:
        _register_serve_detector()
        est = AgeEstimator(model, backend=backend, detector="dlib" if detector_cnn else SERVE_DETECTOR,
                           tta=tta)
    mp = Path(est.model_path)
    name = mp.name if mp.is_file() else mp.name or str(mp)
    concurrency = int(concurrency or max(1, min(4, os.cpu_count() or 1)))
    max_upload, max_pixels = int(max_upload), int(max_pixels)
    if max_upload <= 0 or max_pixels <= 0 or concurrency <= 0:
        raise ValueError("max_upload, max_pixels and concurrency must be positive")
    summary = model_summary(est, name)
    summary["limits"] = {"max_upload_bytes": max_upload, "max_pixels": max_pixels, "concurrency": concurrency,
                         "detector_cnn": bool(detector_cnn)}
    if warmup:  # load the detector and run the network once, so the first request is not slow
        est.predict(np.full((32, 32, 3), 127, np.uint8), fallback=True)

    limiter = anyio.CapacityLimiter(concurrency)

    def work(data: bytes, content_type: str | None, largest: bool, min_face: int, fallback: bool) -> dict:
        t0 = time.perf_counter()
        img = decode_image(data, max_pixels=max_pixels, content_type=content_type)
        faces = est.predict(img, largest=largest, min_face=min_face, fallback=fallback)
        h, w = img.shape[:2]
        return {"faces": [f.to_dict() for f in faces], "width": int(w), "height": int(h), "model": name,
                "elapsed_ms": round((time.perf_counter() - t0) * 1000.0, 2)}

    app = FastAPI(
        title="faceage",
        version=faceage.__version__,
        description=("Age estimation from face photos (MA-SFV2). POST a photo to /v1/estimate; "
                     "the web page is at /."),
    )
    app.state.estimator = est
    app.state.summary = summary

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request", "code": "bad_parameter",
                             "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(jsonable_encoder(exc.detail))
        if exc.status_code == 404:
            detail = f"{detail}: no such path {request.url.path[:200]}; the API is described at /docs"
        elif exc.status_code == 405:
            allowed = (getattr(exc, "headers", None) or {}).get("Allow", "")
            detail = f"{detail}: {request.method} is not allowed on {request.url.path[:200]}" + (
                f"; use {allowed}" if allowed else "")
        return JSONResponse({"detail": detail, "code": f"http_{exc.status_code}"}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error; please report it with the input that caused it",
                             "code": "internal"}, status_code=500)

    @app.post("/v1/estimate", response_model=EstimateResponse, responses=_ERRORS,
              summary="Estimate the ages of the faces in a photo",
              openapi_extra={"requestBody": _REQUEST_BODY})
    async def estimate(
        request: Request,
        largest: bool = Query(False, description="only the largest face"),
        min_face: int = Query(0, ge=0, le=1_000_000, description="ignore faces narrower than this many pixels"),
        fallback: bool = Query(False, description="score a centre crop when no face is found"),
    ):
        try:
            data, content_type = await read_upload(request, max_upload)
        except ClientDisconnect:
            return JSONResponse({"detail": "client disconnected", "code": "disconnected"}, status_code=400)
        return await anyio.to_thread.run_sync(
            partial(work, data, content_type, largest, min_face, fallback), limiter=limiter)

    @app.get("/healthz", response_model=Health, summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "model": name}

    @app.get("/v1/model", summary="The model: architecture, preprocessing, training summary, limits")
    async def model_info() -> dict[str, Any]:
        return summary

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    from faceage.serve.video import add_video_routes  # POST /v1/estimate-video

    add_video_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(_SecurityHeaders)
    return app


class _SecurityHeaders:
    """Pure ASGI middleware (does not touch the request stream): nosniff everywhere, CSP on the page's files."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if static and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): options come from $FACEAGE_SERVE_OPTIONS."""
    options = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    set_threads(options.pop("threads", None))
    return create_app(**options)


def set_threads(n: int | None) -> None:
    """Inference threads per worker, for ONNX Runtime (``FACEAGE_THREADS``) and PyTorch if loaded."""
    if not n:
        return
    os.environ["FACEAGE_THREADS"] = str(int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))
