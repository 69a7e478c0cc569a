"""faceage serve: the REST API and the web page (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from faceage.cli import MODEL_HELP, add_tta_argument, detector_option
from faceage.face.detect import DEFAULT_DETECTOR, DETECTOR_HELP

HELP = "serve age estimation over HTTP: a REST API and a web page"
EPILOG = """examples:
  faceage serve                                  # http://127.0.0.1:8000/ (page), /docs (API)
  faceage serve --port 8080 --model runs/cpu/best.safetensors
  faceage serve --host 0.0.0.0 --workers 2       # reachable from other machines
  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/estimate
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' 'http://127.0.0.1:8000/v1/estimate?largest=true'

POST /v1/estimate answers {"faces": [{"box", "eyes", "age", "age_interval", "score",
"fallback"}], "width", "height", "model", "elapsed_ms"} (faces as in 'faceage predict
--json'); bad input gets a 4xx JSON error {"detail", "code"}. GET /healthz, GET /v1/model.
POST /v1/estimate-video answers the tracks of a short clip; clips are analysed in their own
slot, never an image's, each within --video-timeout seconds. Bodies are read before a slot is
taken (slow clients hold connections, not slots). On SIGTERM the server stops taking work,
stops clip analyses at their next frame and exits within a few seconds.
The server binds to 127.0.0.1 unless --host says otherwise (and then answers only the
Host names 127.0.0.1, localhost and ::1: see --allowed-hosts). Needs the serve extra:
pip install "faceage[serve]"."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes, each with its own copy of the model (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest accepted image in pixels (default 50,000,000; decompression-bomb guard)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests decoded/estimated at once per worker (default: CPU count, at most 4)")
    p.add_argument("--threads", type=int, default=None, help="inference threads per worker, ONNX Runtime or PyTorch (default: all cores)")
    p.add_argument("--max-aspect", type=float, default=None,
                   help="thinnest accepted image, long side / short side (default 20)")
    p.add_argument("--max-decoded-mb", type=float, default=None,
                   help="MB of decoded images held at once per worker (default 512); larger images are refused")
    p.add_argument("--header-timeout", type=float, default=None,
                   help="seconds for a request's headers to arrive before the connection is dropped (default 10)")
    p.add_argument("--body-timeout", type=float, default=None,
                   help="seconds for an upload to arrive before it is refused with 408 (default 30)")
    p.add_argument("--video-timeout", type=float, default=None,
                   help="seconds of analysis per clip on /v1/estimate-video before it is stopped with 413 "
                        "(default 120)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections per worker; more are answered 503 and closed (default 256)")
    p.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                   help="comma-separated Host names answered, '*' for any (default: 127.0.0.1,localhost,::1 "
                        "when bound to loopback, else any)")
    p.add_argument("--cnn", action="store_true",
                   help="also try dlib's CNN detector when HOG finds no face (finds more faces; "
                        "up to tens of seconds per such photo on a CPU)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE", type=detector_option,
                   help="a face detector option, VALUE as JSON (repeatable), as for predict (cnn: see --cnn)")
    add_tta_argument(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def check_address(host: str, port: int) -> None:
    """Raise :class:`AddressError` when ``host:port`` cannot be listened on (in use, or not this machine's)."""
    import socket

    from faceage.errors import AddressError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AddressError(f"--host {host}: not an address of this machine ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            raise AddressError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop the program using the "
                               "port or choose another with --port") from None


def run(args: argparse.Namespace) -> int:
    from faceage.errors import FaceageError
    from faceage.extras import require

    require("serve", "faceage serve")
    import uvicorn

    from faceage.serve import app as serve_app
    if args.workers < 1:
        raise FaceageError("--workers must be at least 1")
    positive = {"--max-upload-mb": args.max_upload_mb, "--max-aspect": args.max_aspect,
                "--max-decoded-mb": args.max_decoded_mb, "--header-timeout": args.header_timeout,
                "--body-timeout": args.body_timeout, "--max-connections": args.max_connections,
                "--video-timeout": args.video_timeout}
    bad = [name for name, value in positive.items() if value is not None and value <= 0]
    if bad:
        raise FaceageError(f"{', '.join(bad)} must be positive")
    if not 0 <= args.port <= 65535:
        raise FaceageError(f"--port {args.port} is not a TCP port (0-65535)")
    hosts = ([h.strip() for h in args.allowed_hosts.split(",") if h.strip()] if args.allowed_hosts
             else serve_app.default_allowed_hosts(args.host))
    options = {
        "model": args.model,
        "max_upload": int(args.max_upload_mb * serve_app.MB),
        "concurrency": args.concurrency,
        "detector_cnn": args.cnn,
        "detector": args.detector,
        "detector_options": dict(args.detector_option),
        "tta": args.tta,
        "allowed_hosts": hosts,
    }
    optional = {"max_pixels": args.max_pixels, "max_aspect": args.max_aspect, "body_timeout": args.body_timeout,
                "video_timeout": args.video_timeout,
                "max_decoded": args.max_decoded_mb and int(args.max_decoded_mb * serve_app.MB)}
    options.update({k: v for k, v in optional.items() if v is not None})
    protocol = {"header_timeout": args.header_timeout or serve_app.HEADER_TIMEOUT,
                "max_connections": args.max_connections or serve_app.DEFAULT_MAX_CONNECTIONS}
    if args.model is not None:
        from faceage.models import locate

        options["model"] = str(locate(args.model).resolve())  # a name or path; fail here, before binding
    check_address(args.host, args.port)  # before the model is loaded; uvicorn would exit 3, "unusable data set"
    print(f"faceage serve: http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr, flush=True)
    server = {"host": args.host, "port": args.port, "log_level": args.log_level,
              "http": serve_app.GuardedH11Protocol,  # its shutdown() stops long work at once (SIGTERM)
              "timeout_graceful_shutdown": serve_app.SHUTDOWN_GRACE}
    if args.workers == 1:
        if args.threads:
            serve_app.set_threads(args.threads)
        serve_app.GuardedH11Protocol.configure(**protocol)
        app = serve_app.create_app(**options)  # load the model once, before accepting connections
        uvicorn.run(app, **server)
    else:
        os.environ[serve_app.ENV_OPTIONS] = json.dumps({**options, "threads": args.threads, "protocol": protocol})
        uvicorn.run("faceage.serve.app:app_from_env", factory=True, workers=args.workers, **server)
    return 0
