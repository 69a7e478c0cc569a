"""``POST /v1/estimate-video``: the people in a short clip, tracked, with fused ages.

The clip comes as the body or as multipart field ``file`` (like ``/v1/estimate``). It is
opened only as MP4/MOV, Matroska/WebM or AVI (recognised from its first bytes; FFmpeg
never probes other formats on uploads), and refused with a 4xx when it is over
``max_bytes``, longer than ``max_seconds`` or larger than ``max_pixels`` per frame.
Clips are analysed one at a time in a worker thread. The answer is the document of
``faceage video --json`` (:func:`faceage.video.report.tracks_document`) plus ``elapsed_ms``.
"""
from __future__ import annotations

import io
import time
from functools import partial

import anyio
from fastapi import APIRouter, FastAPI, Query, Request

from faceage.serve.errors import ApiError, ErrorResponse
from faceage.serve.upload import read_upload

MB = 1024 * 1024
DEFAULT_MAX_BYTES = 50 * MB
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_PIXELS = 1920 * 1088

_ERRORS = {
    400: {"model": ErrorResponse, "description": "empty body or malformed multipart"},
    413: {"model": ErrorResponse, "description": "clip over the byte, duration or frame size limit"},
    415: {"model": ErrorResponse, "description": "not an MP4/MOV, Matroska/WebM or AVI file"},
    422: {"model": ErrorResponse, "description": "a corrupt or undecodable video, or a bad query option"},
}
_BODY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY = {
    "required": True,
    "description": "The clip (mp4, mov, mkv, webm, avi): multipart field 'file' or the raw bytes as the body.",
    "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                   "properties": {"file": {"type": "string", "format": "binary"}}}},
                "video/mp4": _BODY, "video/quicktime": _BODY, "video/webm": _BODY, "video/x-matroska": _BODY,
                "application/octet-stream": _BODY},
}


def analyse_clip(est, data: bytes, *, every: int, min_track: int, max_seconds: float, max_pixels: int) -> dict:
    """Tracks of an uploaded clip as a JSON-plain document, or :class:`ApiError` (4xx)."""
    from faceage.video.io import VideoError, VideoLimitError, container_format
    from faceage.video.pipeline import analyse_video
    from faceage.video.report import tracks_document

    if not data:
        raise ApiError("empty_body", "the body is empty (0 bytes); send the clip's bytes (mp4, mov, mkv, "
                       "webm, avi)")
    fmt = container_format(data[:16])
    if fmt is None:
        raise ApiError("unsupported_format", "not an MP4/MOV, Matroska/WebM or AVI file; convert the clip "
                       "to mp4 (H.264)")
    t0 = time.perf_counter()
    try:
        video = analyse_video(est, io.BytesIO(data), format=fmt, every=every, min_track=min_track,
                              end=max_seconds + 1e-3, max_pixels=max_pixels)
        info = video.info
        if info.duration and info.duration > max_seconds + 0.5:
            raise ApiError("clip_too_long", f"the clip lasts {info.duration:.1f} s, over the limit of "
                           f"{max_seconds:g} s; cut it (faceage video --start/--end works on long videos)")
        tracks = video.tracks
    except VideoLimitError as exc:
        raise ApiError("too_many_pixels", f"{exc}") from None
    except VideoError as exc:
        raise ApiError("corrupt_video", f"{exc}") from None
    doc = tracks_document(info, tracks, video.settings, video.problems)
    doc["elapsed_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
    return doc


def add_video_routes(app: FastAPI, slots, *, body_timeout: float, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_seconds: float = DEFAULT_MAX_SECONDS, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Add ``POST /v1/estimate-video`` to ``app`` (whose ``state.estimator`` answers); an upload takes one
    of the image route's ``slots`` before its body is read, and must arrive within ``body_timeout``."""
    router = APIRouter()
    limiter = anyio.CapacityLimiter(1)

    @router.post("/v1/estimate-video", responses=_ERRORS, openapi_extra={"requestBody": _REQUEST_BODY},
                 summary="Track the people in a short clip and estimate their ages, fused over time")
    async def estimate_video(
        request: Request,
        every: int = Query(5, ge=1, le=60, description="detect and score faces every N-th frame"),
        min_track: int = Query(10, ge=1, le=100_000, description="report tracks spanning at least N frames"),
    ):
        async with slots.slot():
            data, _ = await read_upload(request, max_bytes, body_timeout)
            return await anyio.to_thread.run_sync(
                partial(analyse_clip, request.app.state.estimator, data, every=every, min_track=min_track,
                        max_seconds=max_seconds, max_pixels=max_pixels), limiter=limiter)

    app.include_router(router)
