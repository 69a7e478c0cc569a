"""``faceage serve``: a REST API and a single web page for age estimation.

    from faceage.serve import create_app
    app = create_app("model.safetensors")      # then: uvicorn.run(app)

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""
from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    # imported on first use: `import faceage.serve` must not need FastAPI
    if name == "create_app":
        from faceage.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'faceage.serve' has no attribute {name!r}")
