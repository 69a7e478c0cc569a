"""The FastAPI application behind ``faceage serve``: the routes, built by :func:`create_app`.

``create_app(model)`` loads the model once and returns an ASGI app with

* ``POST /v1/estimate``: the photo as a multipart upload (field ``file``) or as the
  raw request body -> ``{faces, width, height, model, elapsed_ms}``; each face has
  the schema of :meth:`faceage.estimator.FaceAge.to_dict` (and of
  ``faceage predict --json``). Query options ``largest``, ``min_face``, ``max_faces``, ``fallback``
  (:class:`faceage.estimator.FaceOptions`, as for ``predict``).
* ``GET /healthz``, ``GET /v1/model`` (summary of the model's record), ``/docs``
  (OpenAPI) and ``GET /`` (the web page in ``static/``).

The other jobs live next to this module: reading and decoding uploads
(:mod:`faceage.serve.upload`), what a request may cost (:mod:`faceage.serve.limits`:
bodies read before a slot is taken, under a body-bytes budget; request slots, separate for
video; a decoded-bytes budget; slow-client timeouts; a connection cap; allowed hosts;
stopping on SIGTERM), the documented shapes (:mod:`faceage.serve.schemas`) and error codes ->
HTTP statuses (:mod:`faceage.serve.errors`). Decoding and inference run in worker threads, never on
the event loop. Every error is JSON ``{"detail": message, "code": word}``.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

import faceage
from faceage.face.detect import DEFAULT_DETECTOR, DLIB_BACKED
from faceage.estimator import AgeEstimator
from faceage.core.options import FaceOptions
from faceage.core.imageio import DEFAULT_MAX_PIXELS, MAX_BYTES_PER_PIXEL, decode_opened, working_bytes
from faceage.serve.errors import ApiError, install_error_handlers
from faceage.serve.limits import (CSP, LOOPBACK_HOSTS, MB, BodyBudget, GuardedH11Protocol, HostCheck, Lanes,
                                  MemoryBudget, SecurityHeaders, client_key, release_memory, shutdown_event)
from faceage.serve.schemas import ERRORS, REQUEST_BODY, CheckResponse, EstimateResponse, Health
from faceage.serve.upload import open_upload, read_upload

DEFAULT_MAX_UPLOAD = 10 * MB
#: an image's long side may be at most this many times its short side (thinner cannot hold a face,
#: and costs detection for nothing: 1 x 50,000,000 px is 97 KB as a PNG)
DEFAULT_MAX_ASPECT = 20.0
#: decoded bytes held at once by all requests of a process (faceage.core.imageio.working_bytes)
DEFAULT_MAX_DECODED = 512 * MB
#: bytes of image bodies held at once (being read, or waiting for a slot) by all requests of a process:
#: a dozen full-size uploads (32 clients x 10 MB at once: a few get 503 busy, the server stays under 400 MB);
#: one client may hold a quarter of it
DEFAULT_MAX_BODIES = 128 * MB
#: photos of at most this many pixels are "small" (a portrait, a phone photo downscaled for upload): they have
#: slots of their own and room kept for them in the decoded-bytes budget; larger ones queue in the heavy lane
LIGHT_PIXELS = 2_000_000
#: large photos one client may have analysed or waiting at once
HEAVY_PER_CLIENT = 2
#: seconds: the request head (headers) / the body must arrive within these; a request waits at most
#: QUEUE_TIMEOUT for a slot
HEADER_TIMEOUT, BODY_TIMEOUT, QUEUE_TIMEOUT = 10.0, 30.0, 30.0
DEFAULT_MAX_CONNECTIONS = 256
#: seconds uvicorn waits for in-flight requests after SIGTERM before cancelling them (clip analyses stop at
#: once; an image's analysis takes a second or two)
SHUTDOWN_GRACE = 5.0
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: environment variable carrying create_app's keyword arguments to uvicorn worker processes
ENV_OPTIONS = "FACEAGE_SERVE_OPTIONS"
#: images larger than this (working bytes) are followed by handing freed memory back to the system
_TRIM_AFTER = 32 * MB


def small_photo_room(max_decoded: int, concurrency: int, light_pixels: int) -> int:
    """Decoded bytes kept for the small photos' lane (``concurrency`` photos of at most ``light_pixels``, at
    most a quarter of the budget): large photos never fill the last of the budget."""
    return min(int(max_decoded) // 4, int(concurrency) * int(light_pixels) * MAX_BYTES_PER_PIXEL)


def default_concurrency() -> int:
    """Small photos estimated at once by default: one per CPU, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def default_allowed_hosts(bind: str) -> list[str] | None:
    """Host names answered by default: the loopback names for a loopback bind (DNS rebinding), any otherwise."""
    return list(LOOPBACK_HOSTS) if bind in LOOPBACK_HOSTS else None


# ------------------------------------------------------------------------------------ the detector
def server_detector_options(cnn: bool, options: dict | None = None) -> dict:
    """The server's detector options: ``options`` (``faceage serve --detector-option``), without dlib's
    CNN pass unless ``cnn``: on a photo without a face that pass costs up to tens of seconds of CPU,
    which would let any client stall the server; ``cnn=True`` (``faceage serve --cnn``) turns it on."""
    return {**(options or {}), "cnn": bool(cnn)}


# ------------------------------------------------------------------------------------ the app
def _sha256(path: Path) -> str | None:
    try:
        from faceage.models.weights import resolve_model_path

        h = hashlib.sha256()
        with open(resolve_model_path(path), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except Exception:  # noqa: BLE001 - informational only
        return None


def model_summary(est, name: str) -> dict[str, Any]:
    rec = est.record
    return {
        "name": name,
        "arch": rec.model.name,
        "backend": getattr(est.backend, "name", type(est.backend).__name__),
        "sha256": _sha256(est.model_path),
        "input_size": rec.input_size,
        "num_classes": rec.num_classes,
        "ages": [0, rec.num_classes - 1],
        "estimate": rec.estimate,
        "mean": list(rec.mean),
        "std": list(rec.std),
        "crop": rec.crop and rec.crop.to_dict(),
        "spec": rec.model.to_dict(),
        "scoring": rec.scoring.to_dict(),
        "training": rec.training,
        "tta": est.tta,
        "age_checks": sorted(rec.age_checks),  # POST /v1/check?over=N answers for these N
        "faceage_version": faceage.__version__,
    }


def _rows(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Nested mappings flattened to ``(dotted.key, value)`` rows."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _rows(v, f"{key}.{k}" if key else str(k))]
    return [(key, value)]


def model_page(summary: dict[str, Any]) -> str:
    """``GET /model``: the model summary of ``GET /v1/model`` as a readable page (every value escaped)."""
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}"
                     "</td></tr>" for k, v in _rows(summary))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>faceage: model {html.escape(summary["name"])}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css"><link rel="stylesheet" href="/static/model.css"></head>
<body><header><h1>Model {html.escape(summary["name"])}</h1>
<p>{html.escape(summary["arch"])}, {summary["input_size"]} px input, ages {summary["ages"][0]}-{summary["ages"][1]},
faceage {html.escape(summary["faceage_version"])}. A model's licence follows its training data: the bundled model
(UTKFace and All-Age-Faces) is for non-commercial research use only.</p></header>
<main><table class="card">{rows}</table></main>
<footer><a href="/">photo page</a> &middot; <a href="/v1/model">this page as JSON</a> &middot;
<a href="/docs">API docs</a> &middot; <a href="/redoc">API reference (ReDoc)</a></footer></body></html>
"""


async def _declared_query_only(request: Request) -> None:
    """Every route takes only the query parameters it declares, each once: ``?model=accurate`` on a server
    of another model, or ``?over=18&over=13``, is a 422 naming them, not an answer to another question."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = {p.alias for p in dependant.query_params}
    names = [k for k, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - allowed)
    repeated = sorted({k for k in names if names.count(k) > 1} & allowed)
    problems = ([f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                 f"(this route takes {', '.join(sorted(allowed)) or 'none'})"] if unknown else []) + \
               ([f"{', '.join(repeated)} given more than once"] if repeated else [])
    if problems:
        raise ApiError("bad_parameter", "; ".join(problems))


def create_app(model=None, *, max_upload: int = DEFAULT_MAX_UPLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_aspect: float = DEFAULT_MAX_ASPECT, max_decoded: int = DEFAULT_MAX_DECODED,
               concurrency: int | None = None, backend: str = "auto", detector_cnn: bool = False,
               detector: str = DEFAULT_DETECTOR, detector_options: dict | None = None,
               tta: str = "zoomflip", warmup: bool = True, body_timeout: float = BODY_TIMEOUT,
               queue_timeout: float = QUEUE_TIMEOUT, allowed_hosts: list[str] | None = None,
               max_bodies: int = DEFAULT_MAX_BODIES, video_timeout: float | None = None,
               light_pixels: int = LIGHT_PIXELS, heavy_per_client: int = HEAVY_PER_CLIENT) -> FastAPI:
    """The ASGI app. ``model``: a model file or run folder (the bundled model when None), or a
    ready :class:`~faceage.estimator.AgeEstimator`. The model is loaded here, once.

    ``max_upload``: largest accepted upload in bytes; ``max_pixels``: largest accepted image
    in pixels; ``max_aspect``: thinnest accepted image (long side / short side);
    ``max_decoded``: bytes of decoded images held at once by all requests;
    ``concurrency``: small photos (at most ``light_pixels``) estimated at once (default: CPU count,
    at most 4; larger photos: one fewer, at least one, and at most ``heavy_per_client`` per client
    waiting or running; :class:`~faceage.serve.limits.Lanes`); ``detector_cnn``: allow dlib's slow CNN pass (:func:`server_detector_options`);
    ``detector`` / ``detector_options``: the face detector, as for ``predict``; ``tta``:
    test-time views per face (see :class:`~faceage.estimator.AgeEstimator`);
    ``body_timeout`` / ``queue_timeout``: seconds for an upload to arrive / to wait for a
    slot; ``allowed_hosts``: the ``Host`` names answered (None: any); ``max_bodies``: bytes of
    image bodies held at once, a quarter of it per client (bodies are read before a slot is taken;
    video has its own budget); ``video_timeout``: the
    wall-clock budget of one video request (:mod:`faceage.serve.video`).
    """
    est = model if isinstance(model, AgeEstimator) else AgeEstimator(
        model, backend=backend, detector=detector, detector_options=server_detector_options(detector_cnn, detector_options) if detector in DLIB_BACKED else detector_options,
        tta=tta)
    mp = Path(est.model_path)
    name = mp.name if mp.is_file() else mp.name or str(mp)
    concurrency = int(concurrency or default_concurrency())
    max_upload, max_pixels, max_decoded = int(max_upload), int(max_pixels), int(max_decoded)
    if min(max_upload, max_pixels, max_decoded, concurrency, max_aspect, body_timeout, queue_timeout) <= 0:
        raise ValueError("max_upload, max_pixels, max_aspect, max_decoded, concurrency and the timeouts "
                         "must be positive")
    heavy_slots = max(1, concurrency - 1)
    per_client_bodies = max(2 * max_upload, int(max_bodies) // 4)
    summary = model_summary(est, name)
    summary["limits"] = {"max_upload_bytes": max_upload, "max_pixels": max_pixels, "max_aspect": max_aspect,
                         "max_decoded_bytes": max_decoded, "max_body_bytes": int(max_bodies),
                         "max_body_bytes_per_client": per_client_bodies, "concurrency": concurrency,
                         "large_photo_concurrency": heavy_slots, "light_pixels": int(light_pixels),
                         "large_photos_per_client": int(heavy_per_client),
                         "body_timeout_s": body_timeout, "queue_timeout_s": queue_timeout,
                         "detector_cnn": bool(detector_cnn), "allowed_hosts": allowed_hosts}
    if warmup:  # load the detector and run the network once, so the first request is not slow
        est.predict(np.full((32, 32, 3), 127, np.uint8), fallback=True)
        getattr(est.pipeline.detector, "warm_up", lambda: None)()  # networks a small photo does not load
    shutdown = shutdown_event()  # set on SIGTERM: queued work refused, videos stop at their next frame
    lanes = Lanes(concurrency, heavy_slots, light_pixels, heavy_per_client, queue_timeout, shutdown=shutdown)
    budget = MemoryBudget(max_decoded, queue_timeout, reserved=small_photo_room(max_decoded, concurrency, light_pixels))
    bodies = BodyBudget(max_bodies, per_client_bodies, "photo uploads")

    def work(img, t0: float, options: FaceOptions, policy) -> dict:
        arr = decode_opened(img, name="upload", max_pixels=max_pixels, max_aspect=max_aspect)
        result = est.analyse(arr, options)  # the one per-photo path
        return result.response(name, (time.perf_counter() - t0) * 1000.0, policy)

    async def answer_upload(request: Request, options: FaceOptions, policy=None) -> dict:
        """Read, open and decode the uploaded photo within the limits and answer it (its ages, or its age checks
        under ``policy``) in a worker thread: the one upload path of /v1/estimate and /v1/check."""
        client = client_key(request)
        with bodies.hold(client) as hold:
            # the body first, then a slot: a client sending slowly holds a connection, never a slot
            data, content_type = await read_upload(request, max_upload, body_timeout, hold)
            # then the header alone, outside any slot: its size is the request's cost, which picks the lane
            img = await anyio.to_thread.run_sync(partial(
                open_upload, data, content_type=content_type, max_pixels=max_pixels, max_aspect=max_aspect))
            del data
            pixels, need = img.width * img.height, working_bytes(img)
            try:
                async with lanes.slot(pixels, client):
                    t0 = time.perf_counter()
                    async with budget.reserve(need, light=not lanes.is_heavy(pixels)):
                        return await anyio.to_thread.run_sync(partial(work, img, t0, options, policy))
            finally:
                img.close()
                if need > _TRIM_AFTER:
                    release_memory()

    app = FastAPI(
        dependencies=[Depends(_declared_query_only)],
        title="faceage",
        version=faceage.__version__,
        description=("Age estimation from face photos (MA-SFV2). POST a photo to /v1/estimate; "
                     "the web page is at /."),
        docs_url=None, redoc_url=None,  # add_offline_docs: the same pages without a CDN
    )
    app.state.estimator = est
    app.state.summary = summary
    app.state.budget = budget
    app.state.lanes = lanes
    app.state.shutdown = shutdown
    install_error_handlers(app)

    @app.post("/v1/estimate", response_model=EstimateResponse, response_model_exclude_unset=True, responses=ERRORS,
              summary="Estimate the ages of the faces in a photo",
              openapi_extra={"requestBody": REQUEST_BODY})
    async def estimate(
        request: Request,
        largest: bool = Query(False, description="only the largest face"),
        min_face: int = Query(0, ge=0, le=1_000_000, description="ignore faces narrower than this many pixels"),
        max_faces: int = Query(0, ge=0, le=10_000, description="only the largest N faces (0: all)"),
        fallback: bool = Query(False, description="score a centre crop when no face is found"),
    ):
        return await answer_upload(request, FaceOptions(largest=largest, min_face=min_face, max_faces=max_faces,
                                                        fallback=fallback))

    @app.post("/v1/check", response_model=CheckResponse, response_model_exclude_unset=True, responses=ERRORS,
              summary="Age check: is each face in a photo at least `over` years old? pass or refer",
              description="Each face gets the calibrated probability that the person is at least `over` "
                          "(p_over) and the decision of the model's policy for `over` ('pass' or 'refer' to an "
                          "ID check). The bundled model has policies for 13, 16, 18, 21 and 25, each chosen on "
                          "validation photos so that at most 1% of those 1-5 years under passed; measured rates "
                          "and limits: docs/age-checks.md. Upload and limits as for /v1/estimate.",
              openapi_extra={"requestBody": REQUEST_BODY})
    async def check(
        request: Request,
        over: int = Query(..., ge=1, le=100, description="the age to check, e.g. 18"),
        largest: bool = Query(False, description="only the largest face"),
        min_face: int = Query(0, ge=0, le=1_000_000, description="ignore faces narrower than this many pixels"),
        max_faces: int = Query(0, ge=0, le=10_000, description="only the largest N faces (0: all)"),
    ):
        from faceage.checks.policy import policy_for

        policy = policy_for(est.record, over)  # no policy for this age: 422 no_policy, before the upload is read
        return await answer_upload(request, FaceOptions(largest=largest, min_face=min_face, max_faces=max_faces),
                                   policy)

    @app.get("/healthz", response_model=Health, summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "model": name}

    @app.get("/v1/model", summary="The model: architecture, preprocessing, training summary, limits")
    async def model_info() -> dict[str, Any]:
        return summary

    from faceage.serve.docs import add_offline_docs  # /docs and /redoc without a CDN

    add_offline_docs(app)

    @app.get("/model", include_in_schema=False)  # GET /v1/model as a readable page
    async def model_card() -> HTMLResponse:
        return HTMLResponse(model_page(summary), headers={"Content-Security-Policy": CSP})

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    from faceage.serve.video import add_video_routes  # POST /v1/estimate-video

    add_video_routes(app, body_timeout=body_timeout, queue_timeout=queue_timeout, shutdown=shutdown,
                     **({"max_wall": video_timeout} if video_timeout else {}))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=list(allowed_hosts))
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): options come from $FACEAGE_SERVE_OPTIONS."""
    options = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    set_threads(options.pop("threads", None))
    GuardedH11Protocol.configure(**options.pop("protocol", {}))
    return create_app(**options)


def set_threads(n: int | None) -> None:
    """Inference threads per worker, for ONNX Runtime (``FACEAGE_THREADS``) and PyTorch if loaded."""
    if not n:
        return
    os.environ["FACEAGE_THREADS"] = str(int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))
