"""Reading uploads and decoding them, never holding more than the limits allow.

The body is never read whole before its size is known: a ``Content-Length`` over the
limit is refused before reading, the stream is counted chunk by chunk (chunked uploads
are cut off as soon as they pass the limit) and the whole body must arrive within the
body timeout (a client sending a byte a second is dropped, not waited for). Bodies are
read before an analysis slot is taken, each chunk counted against the server's
:class:`~faceage.serve.limits.BodyBudget`, so slow clients hold connections, not slots.

Decoding goes through :mod:`faceage.core.imageio` (the one list of decoders, the header
checks); its :class:`~faceage.errors.ImageError` codes become HTTP statuses in
:mod:`faceage.serve.errors`. The header is read first (:func:`open_upload`) so that the
server can check the image's size and budget its decoded bytes before decoding.
"""
from __future__ import annotations

import anyio
from PIL import Image
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect, Request

from faceage.errors import ImageError
from faceage.core.imageio import MB, SUPPORTED_TEXT, check_size, open_image
from faceage.serve.errors import ApiError
from faceage.serve.limits import BodyHold

#: room for the multipart framing (boundaries, part headers, small fields) on top of the file
MULTIPART_OVERHEAD = 64 * 1024
#: Content-Types that say "this is not an image" outright
_NON_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded",
                    "application/pdf", "application/zip", "audio/", "video/", "font/")


def _non_image_content_type(content_type: str | None) -> bool:
    ct = (content_type or "").split(";")[0].strip().lower()
    return bool(ct) and ct.startswith(_NON_IMAGE_TYPES)


def open_upload(data: bytes, *, content_type: str | None = None, name: str = "upload", max_pixels: int,
                max_aspect: float | None = None) -> Image.Image:
    """The upload's header, checked against the size limits; nothing is decoded yet."""
    if not data:
        raise ApiError("empty_body", f"{name}: the body is empty (0 bytes); send the photo's bytes ({SUPPORTED_TEXT})")
    try:
        img = open_image(data, name=name)
    except ImageError as exc:
        if exc.code == "not_an_image" and _non_image_content_type(content_type):
            raise ImageError(f"{name}: Content-Type {content_type.split(';')[0]} is not an image; send the photo "
                             f"({SUPPORTED_TEXT}) as the body or as multipart field 'file'",
                             code="unsupported_format") from None
        raise
    try:
        check_size(img.size, name, max_pixels, max_aspect)
    except ImageError:
        img.close()
        raise
    return img


def _too_large(max_upload: int, n: int | None = None) -> ApiError:
    size = f"upload is {n:,} bytes, over" if n is not None else "upload is over"
    return ApiError("too_large", f"{size} the limit of {max_upload:,} bytes ({max_upload / MB:g} MB); "
                    "send a smaller image")


async def _limited_stream(request: Request, limit: int, max_upload: int, hold: BodyHold | None):
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(max_upload)
        if chunk:
            if hold is not None:
                hold.add(len(chunk))
            yield chunk


async def read_upload(request: Request, max_upload: int, timeout: float,
                      hold: BodyHold | None = None) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and declared type, reading at most ``max_upload`` (+ multipart
    framing) bytes in at most ``timeout`` seconds, counted in ``hold`` (the server's body budget)."""
    try:
        with anyio.fail_after(timeout):
            return await _read_upload(request, max_upload, hold)
    except TimeoutError:
        raise ApiError("body_timeout", f"the upload did not arrive within {timeout:g} s; send it faster or ask "
                       "for a longer --body-timeout") from None
    except ClientDisconnect:
        raise ApiError("disconnected", "client disconnected before the upload was complete") from None


async def _read_upload(request: Request, max_upload: int, hold: BodyHold | None) -> tuple[bytes, str | None]:
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
            raise ApiError("bad_request", f"Content-Length {length[:40]!r} is not a byte count") from None
        if n > limit:
            raise _too_large(max_upload, n)
    stream = _limited_stream(request, limit, max_upload, hold)
    if not multipart:
        chunks = [chunk async for chunk in stream]
        return b"".join(chunks), content_type
    try:
        form = await MultiPartParser(request.headers, stream, max_files=4, max_fields=16,
                                     max_part_size=64 * 1024).parse()
    except (ApiError, ClientDisconnect):
        raise
    except Exception as exc:  # noqa: BLE001 - MultiPartException, parser errors on garbage framing
        raise ApiError("bad_multipart", f"malformed multipart/form-data body ({exc}); send the photo "
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
            raise ApiError("no_file", "the multipart body has no file part; send the photo as a file field "
                           "named 'file' (curl -F file=@photo.jpg)")
        data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            raise _too_large(max_upload)
        return data, upload.content_type
    finally:
        await form.close()
