"""Errors a user can act on. Each message says which input is wrong and what to do."""


class FaceageError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ImageError(FaceageError, ValueError):
    """An image could not be decoded or is outside the accepted limits."""


class ManifestError(FaceageError, ValueError):
    """A manifest or data set has no usable rows or is malformed."""


class WeightsError(FaceageError, ValueError):
    """A weights file is malformed, unsafe or does not match its architecture."""


class ConfigError(FaceageError, ValueError):
    """A training config has an unknown key or a bad value."""
