"""The HTTP API's documented shapes: response models, error responses and request bodies of ``/v1/estimate`` and
``/v1/check`` (what ``/docs`` shows; the routes are :mod:`faceage.serve.app`)."""
from __future__ import annotations

from pydantic import BaseModel, Field

from faceage.core.imageio import SUPPORTED_TEXT
from faceage.serve.errors import ErrorResponse


class EstimateFace(BaseModel):
    """One face of an /v1/estimate answer (the JSON of faceage.estimator.FaceAge)."""

    box: list[int] = Field(description="left, top, right, bottom in image pixels (after EXIF rotation)")
    eyes: list[list[float]] = Field(description="eye centres [[x, y], [x, y]], image-left eye first")
    age: float | None = Field(description="estimated age in years (null only with an error)")
    age_interval: list[float] | None = Field(description="80% interval of the predicted age distribution")
    score: float = Field(description="detector confidence (0 for a fallback crop)")
    fallback: bool = Field(description="true: no face was found and a centre crop was scored")
    error: str | None = Field(None, description="only on a face without an age: why (the model's outputs "
                                                "were NaN or infinite)")
    code: str | None = Field(None, description="only with error: bad_model_output")


class EstimateResponse(BaseModel):
    faces: list[EstimateFace] = Field(description="faces, largest first; [] when none is found")
    width: int = Field(description="image width in pixels (after EXIF rotation)")
    height: int = Field(description="image height in pixels (after EXIF rotation)")
    model: str = Field(description="name of the model that answered (see GET /v1/model)")
    elapsed_ms: float = Field(description="decoding + detection + inference time, milliseconds")


class CheckFace(BaseModel):
    box: list[int] = Field(description="left, top, right, bottom in image pixels (after EXIF rotation)")
    age: float | None = Field(description="estimated age in years (null only with an error)")
    p_over: float | None = Field(description="calibrated probability that the person is at least `over` "
                                             "(null only with an error)")
    decision: str = Field(description="'pass' (p_over reaches the policy's threshold) or 'refer' (check an ID; "
                                      "always for a face with an error)")
    error: str | None = Field(None, description="only on a face without an age: why (the model's outputs "
                                                "were NaN or infinite)")
    code: str | None = Field(None, description="only with error: bad_model_output")


class CheckPolicy(BaseModel):
    over: int = Field(description="the age checked")
    threshold: float = Field(description="a face passes when its p_over reaches this")
    logit_threshold: float = Field(description="the same threshold on the uncalibrated log-odds")
    max_share: float = Field(description="at most this share of validation faces aged band[0]..band[1] passed")
    band: list[int] = Field(description="the ages just under the threshold whose pass rate the policy bounds")
    calibration: str = Field(description="how p_over was calibrated (platt or isotonic)")


class CheckResponse(BaseModel):
    faces: list[CheckFace] = Field(description="faces, largest first; [] when none is found (nobody passes)")
    policy: CheckPolicy
    width: int = Field(description="image width in pixels (after EXIF rotation)")
    height: int = Field(description="image height in pixels (after EXIF rotation)")
    model: str = Field(description="name of the model that answered (see GET /v1/model)")
    elapsed_ms: float = Field(description="decoding + detection + inference time, milliseconds")


class Health(BaseModel):
    status: str
    model: str


ERRORS = {
    400: {"model": ErrorResponse, "description": "empty body, malformed multipart or bad header"},
    408: {"model": ErrorResponse, "description": "the upload did not arrive within the body timeout"},
    413: {"model": ErrorResponse, "description": "upload over the byte limit, image over the pixel limit or "
                                                 "over the decoded-size limit"},
    415: {"model": ErrorResponse, "description": "not an image type this server decodes"},
    422: {"model": ErrorResponse, "description": "not an image, a corrupt/truncated image, an image too thin "
                                                 "to hold a face, a bad query option, or (/v1/check) an age "
                                                 "the model has no policy for (code no_policy)"},
    503: {"model": ErrorResponse, "description": "busy: no slot within the queue timeout; retry"},
}

IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY = {
    "required": True,
    "description": (f"The photo ({SUPPORTED_TEXT}): either multipart/form-data with a file field named "
                    "'file', or the raw image bytes as the body."),
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        "image/jpeg": IMAGE_BODY,
        "image/png": IMAGE_BODY,
        "image/webp": IMAGE_BODY,
        "application/octet-stream": IMAGE_BODY,
    },
}
