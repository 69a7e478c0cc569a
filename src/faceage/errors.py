"""Errors a user can act on. Each message says which input is wrong and what to do.

Every error carries a machine-readable ``code`` (a word such as ``corrupt_image`` or
``bad_model_file``): the server turns codes into HTTP statuses and the CLI turns error
classes into exit codes, each in one table, so nothing ever inspects message text.
"""
from __future__ import annotations


class FaceageError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code  # an instance attribute: kept when the error is pickled across processes


class ImageError(FaceageError, ValueError):
    """An image could not be decoded or is outside the accepted limits.

    Codes: ``empty_image``, ``file_not_found``, ``unreadable_file``, ``symlink_loop``, ``not_an_image``,
    ``unsupported_format``, ``corrupt_image``, ``too_many_pixels``, ``image_too_thin``,
    ``image_too_large`` (decoded working size), ``file_too_large`` (a file larger than
    :func:`faceage.core.imageio.max_file_bytes`, refused before reading), ``bad_array`` (a bad in-memory input).
    """

    code = "corrupt_image"


class ManifestError(FaceageError, ValueError):
    """A manifest or data set has no usable rows or is malformed."""

    code = "bad_manifest"


class WeightsError(FaceageError, ValueError):
    """A weights file is malformed, unsafe or does not match its architecture."""

    code = "bad_model_file"


class AddressError(FaceageError, OSError):
    """``faceage serve`` cannot listen on its address (the port is in use, or the address is not this machine's)."""

    code = "address_unusable"


class ConfigError(FaceageError, ValueError):
    """A training config has an unknown key or a bad value."""

    code = "bad_config"


class ModelOutputError(WeightsError):
    """The model gave NaN or infinite outputs. Reported per face (``FaceAge.error``, the batch row's
    ``error``, the server's face ``code``), never as an age; ``faceage predict`` exits with this
    class's status (4) when some face got one."""

    code = "bad_model_output"
