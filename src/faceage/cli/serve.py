"""faceage serve: the REST API and the web page (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from faceage.cli import add_tta_argument

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
The server binds to 127.0.0.1 unless --host says otherwise. Needs the serve extra:
pip install "faceage[serve]"."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--model", default=None, help="model file or run folder (default: the bundled model)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes, each with its own copy of the model (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest accepted image in pixels (default 50,000,000; decompression-bomb guard)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests decoded/estimated at once per worker (default: CPU count, at most 4)")
    p.add_argument("--threads", type=int, default=None, help="inference threads per worker, ONNX Runtime or PyTorch (default: all cores)")
    p.add_argument("--cnn", action="store_true",
                   help="also try dlib's CNN detector when HOG finds no face (finds more faces; "
                        "up to tens of seconds per such photo on a CPU)")
    add_tta_argument(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    from faceage.errors import FaceageError

    try:
        import uvicorn

        from faceage.serve import app as serve_app
    except ImportError as exc:
        raise FaceageError(f"the server needs the serve extra ({exc.name} is missing): "
                           'pip install "faceage[serve]"') from exc
    if args.workers < 1:
        raise FaceageError("--workers must be at least 1")
    if args.max_upload_mb <= 0:
        raise FaceageError("--max-upload-mb must be positive")
    if not 0 <= args.port <= 65535:
        raise FaceageError(f"--port {args.port} is not a TCP port (0-65535)")
    options = {
        "model": args.model,
        "max_upload": int(args.max_upload_mb * serve_app.MB),
        "concurrency": args.concurrency,
        "detector_cnn": args.cnn,
        "tta": args.tta,
    }
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels
    if args.model is not None:
        from faceage.weights import resolve_model_path

        options["model"] = str(resolve_model_path(args.model).resolve())  # fail here, before binding
    print(f"faceage serve: http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr, flush=True)
    if args.workers == 1:
        if args.threads:
            serve_app.set_threads(args.threads)
        app = serve_app.create_app(**options)  # load the model once, before accepting connections
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    else:
        os.environ[serve_app.ENV_OPTIONS] = json.dumps({**options, "threads": args.threads})
        uvicorn.run("faceage.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level)
    return 0

