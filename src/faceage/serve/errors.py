"""Error codes -> HTTP statuses, in one table, and the JSON error responses.

Every error the server answers is JSON ``{"detail": message, "code": word}``. The
code comes from the error itself (:class:`faceage.errors.FaceageError.code`: decoding
errors from :mod:`faceage.core.imageio`, request errors from :class:`ApiError`); the status
is looked up in :data:`STATUS`. Nothing here reads message text.
"""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceage.errors import FaceageError

log = logging.getLogger("faceage.serve")

#: error code -> HTTP status; a code missing here is a server fault (500)
STATUS = {
    # the request
    "empty_body": 400, "bad_request": 400, "bad_multipart": 400, "no_file": 400, "disconnected": 400,
    "bad_host": 400, "body_timeout": 408, "too_large": 413, "bad_parameter": 422, "busy": 503,
    "no_policy": 422,  # an age check for a threshold the model has no policy for (faceage.checks.policy)
    # the image (faceage.errors.ImageError codes)
    "empty_image": 400, "too_many_pixels": 413, "image_too_large": 413, "unsupported_format": 415,
    "not_an_image": 422, "corrupt_image": 422, "image_too_thin": 422, "bad_array": 422,
    # paths: never from an upload, listed to keep the table whole
    "file_not_found": 422, "unreadable_file": 422, "file_too_large": 413, "symlink_loop": 422,
    # the video route (faceage.serve.video)
    "clip_too_long": 413, "too_many_frames": 413, "analysis_timeout": 413, "corrupt_video": 422,
    # the server stopping (SIGTERM): queued and long work refused
    "shutting_down": 503,
    # the server's own faults
    "bad_model_file": 500, "internal": 500,  # (bad_model_output is a per-face error in a 200 answer)
}


class ErrorResponse(BaseModel):
    """The body of every error answer (the OpenAPI schema of the routes' 4xx/5xx responses)."""

    detail: str = Field(description="what is wrong and what to do")
    code: str = Field(description="machine-readable error kind, e.g. not_an_image, too_large")


def status_of(code: str) -> int:
    return STATUS.get(code, 500)


class ApiError(FaceageError):
    """A request the server refuses: a machine-readable ``code`` (see :data:`STATUS`) and a message
    saying what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    @property
    def status(self) -> int:
        return status_of(self.code)

    @property
    def message(self) -> str:
        return str(self)


def error_response(code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    status = status_of(code)
    if status == 503:
        headers = {"Retry-After": "5", **(headers or {})}
    return JSONResponse({"detail": message, "code": code, **extra}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors for faceage errors, bad query options, unknown paths and anything unexpected."""

    @app.exception_handler(FaceageError)
    async def _faceage_error(request: Request, exc: FaceageError):
        if status_of(exc.code) >= 500:
            log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc)
        return error_response(exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return error_response("bad_parameter", "; ".join(parts) or "invalid request", errors=errors)

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
        return error_response("internal", "internal server error; please report it with the input that caused it")
