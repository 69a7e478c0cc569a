"""faceage: age estimation from face photos with MA-SFV2 (ShuffleNetV2 + mixed attention).

    from faceage import AgeEstimator
    faces = AgeEstimator().predict("photo.jpg")
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["AgeEstimator", "FaceAge", "AgeEstimate", "load_model", "__version__"]


def __getattr__(name: str):
    # imported on first use, so `faceage --help` and the CLI stay quick to start
    if name in ("AgeEstimator", "FaceAge", "AgeEstimate"):
        from faceage import estimator

        return getattr(estimator, name)
    if name == "load_model":
        from faceage.weights import load_model

        return load_model
    raise AttributeError(f"module 'faceage' has no attribute {name!r}")
