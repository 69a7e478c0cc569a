"""faceage: age estimation from face photos with MA-SFV2 (ShuffleNetV2 + mixed attention).

    from faceage import AgeEstimator
    faces = AgeEstimator().predict("photo.jpg")
"""
from __future__ import annotations

from typing import TYPE_CHECKING

#: the one version source: pyproject.toml reads it, ``faceage --version`` and ``GET /v1/model`` print it
__version__ = "0.1.0"
__all__ = ["AgeEstimator", "FaceAge", "AgeEstimate", "load_model", "__version__"]

if TYPE_CHECKING:  # for type checkers and the API reference; at run time these load on first use
    from faceage.estimator import AgeEstimate, AgeEstimator, FaceAge
    from faceage.models.weights import load_model


def __getattr__(name: str):
    # imported on first use, so `faceage --help` and the CLI stay quick to start
    if name in ("AgeEstimator", "FaceAge", "AgeEstimate"):
        from faceage import estimator

        return getattr(estimator, name)
    if name == "load_model":
        from faceage.models.weights import load_model

        return load_model
    raise AttributeError(f"module 'faceage' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too, although they load lazily (``dir(faceage)``, tab completion)."""
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
