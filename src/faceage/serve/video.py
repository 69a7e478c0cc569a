"""``POST /v1/estimate-video``: the people in a short clip, tracked, with fused ages.

The clip comes as the body or as multipart field ``file`` (like ``/v1/estimate``). It is
opened only as MP4/MOV, Matroska/WebM or AVI (recognised from its first bytes; FFmpeg
never probes other formats on uploads), and refused with a 4xx when it is over
``max_bytes``, longer than ``max_seconds``, has more than ``max_frames`` frames or a frame
larger than ``max_pixels``: the frame limits are checked on every decoded frame as it
arrives, whatever the container declares (:class:`faceage.video.io.VideoReader`).

What a clip may cost: its body is read before anything else, under this route's own body
budget (``max_bodies``, one clip's worth per client: a slow client holds a connection, not a
slot, and slow senders here never take the bytes image uploads need); clips are analysed in
their own slots (``video_concurrency``, one by default), never in the image route's; the frames
the analysis holds are reserved from this route's own decoded-bytes budget (``max_decoded``),
never the images'; so videos cannot starve ``/v1/estimate``; and the analysis stops between frames when its wall-clock budget (``max_wall``) is
spent (413 ``analysis_timeout``), when the client disconnects, or when the server shuts down
(503 ``shutting_down``). The answer is the document of ``faceage video --json``
(:func:`faceage.video.report.tracks_document`) plus ``elapsed_ms``.
"""
from __future__ import annotations

import io
import threading
import time
from functools import partial

from fastapi import APIRouter, FastAPI, Query, Request

from faceage.core.imageio import MB
from faceage.serve.errors import ApiError, ErrorResponse
from faceage.serve.limits import BodyBudget, MemoryBudget, RequestSlots, WorkStop, client_key, run_watched
from faceage.serve.upload import read_upload

DEFAULT_MAX_BYTES = 50 * MB
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_PIXELS = 1920 * 1088
#: frames per clip: 60 s at 60 frames/s (a clip whose time stamps all say 0 is stopped here too)
DEFAULT_MAX_FRAMES = 3600
#: seconds of analysis per clip: a 60 s, 25 frames/s 720p clip at every=5 takes about 30 s (docs/video.md:
#: about 50 frames/s on the loaded 2-core machine)
DEFAULT_MAX_WALL = 120.0
#: decoded bytes all clips' analyses hold at once: one clip at every=60 (64 frames of 1920x1088) fits
DEFAULT_MAX_DECODED = 448 * MB
#: bytes of clip bodies held at once (two full-size clips); one client may hold one
DEFAULT_MAX_BODIES = 2 * DEFAULT_MAX_BYTES

_ERRORS = {
    400: {"model": ErrorResponse, "description": "empty body or malformed multipart"},
    413: {"model": ErrorResponse, "description": "clip over the byte, duration, frame-count or frame-size limit, "
                                                 "or its analysis over the time budget"},
    415: {"model": ErrorResponse, "description": "not an MP4/MOV, Matroska/WebM or AVI file"},
    422: {"model": ErrorResponse, "description": "a corrupt or undecodable video, or a bad query option"},
    503: {"model": ErrorResponse, "description": "busy (another clip is being analysed) or shutting down; retry"},
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


def analyse_clip(est, data: bytes, *, every: int, min_track: int, max_seconds: float, max_pixels: int,
                 max_frames: int = DEFAULT_MAX_FRAMES, stop: WorkStop | None = None) -> dict:
    """Tracks of an uploaded clip as a JSON-plain document, or :class:`ApiError` (4xx; 503 when ``stop``
    says the server is shutting down)."""
    from faceage.video.io import VideoError, VideoReader, container_format
    from faceage.video.pipeline import VideoAnalysis
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
        reader = VideoReader(io.BytesIO(data), format=fmt, max_pixels=max_pixels, max_frames=max_frames,
                             max_seconds=max_seconds, stop=stop and stop.check)
        try:
            video = VideoAnalysis(est, reader, every=every, min_track=min_track)
        except Exception:
            reader.close()
            raise
        tracks = video.tracks
    except VideoError as exc:
        code = exc.code if exc.code in ("too_many_pixels", "clip_too_long", "too_many_frames") else "corrupt_video"
        raise ApiError(code, f"{exc}") from None
    doc = tracks_document(video.info, tracks, video.settings, video.problems)
    doc["elapsed_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
    return doc


def clip_working_bytes(every: int, max_pixels: int) -> int:
    """Decoded bytes one clip's analysis holds at the peak: the frames between two detections (RGB),
    two more and the decoder's own, all at the largest frame size allowed."""
    return (every + 4) * max_pixels * 3


def add_video_routes(app: FastAPI, *, body_timeout: float, queue_timeout: float, shutdown: threading.Event,
                     max_bytes: int = DEFAULT_MAX_BYTES, max_seconds: float = DEFAULT_MAX_SECONDS,
                     max_pixels: int = DEFAULT_MAX_PIXELS, max_frames: int = DEFAULT_MAX_FRAMES,
                     max_wall: float = DEFAULT_MAX_WALL, video_concurrency: int = 1,
                     max_decoded: int = DEFAULT_MAX_DECODED, max_bodies: int = DEFAULT_MAX_BODIES) -> None:
    """Add ``POST /v1/estimate-video`` to ``app`` (whose ``state.estimator`` answers): bodies under this
    route's ``max_bodies`` (``max_bytes`` per client), within ``body_timeout``; ``video_concurrency`` clips
    at once (their own slots, waiting at most ``queue_timeout``), their frames reserved from this route's
    ``max_decoded``, each stopped after ``max_wall`` s, when its client goes away or when ``shutdown`` is
    set."""
    router = APIRouter()
    slots = RequestSlots(video_concurrency, queue_timeout, what="video analyses", shutdown=shutdown)
    budget = MemoryBudget(max_decoded, queue_timeout)
    bodies = BodyBudget(max_bodies, max_bytes, "video uploads")
    app.state.summary.setdefault("limits", {}).update(
        video={"max_bytes": max_bytes, "max_seconds": max_seconds, "max_pixels": max_pixels,
               "max_frames": max_frames, "timeout_s": max_wall, "concurrency": video_concurrency,
               "max_decoded_bytes": max_decoded, "max_body_bytes": max_bodies, "max_body_bytes_per_client": max_bytes})

    @router.post("/v1/estimate-video", responses=_ERRORS, openapi_extra={"requestBody": _REQUEST_BODY},
                 summary="Track the people in a short clip and estimate their ages, fused over time")
    async def estimate_video(
        request: Request,
        every: int = Query(5, ge=1, le=60, description="detect and score faces every N-th frame"),
        min_track: int = Query(10, ge=1, le=100_000, description="report tracks spanning at least N frames"),
    ):
        with bodies.hold(client_key(request)) as hold:
            data, _ = await read_upload(request, max_bytes, body_timeout, hold)
            async with slots.slot(), budget.reserve(clip_working_bytes(every, max_pixels), "clip"):
                stop = WorkStop(shutdown, max_wall)
                return await run_watched(request, stop, partial(
                    analyse_clip, request.app.state.estimator, data, every=every, min_track=min_track,
                    max_seconds=max_seconds, max_pixels=max_pixels, max_frames=max_frames, stop=stop))

    app.include_router(router)
