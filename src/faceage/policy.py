"""Deprecated name of :mod:`faceage.checks.policy` (moved when the package was grouped by stage); it keeps working,
with a DeprecationWarning, until 0.3."""
import importlib
import warnings

warnings.warn("faceage.policy is now faceage.checks.policy; the old name goes in 0.3", DeprecationWarning, stacklevel=2)
_MODULE = importlib.import_module("faceage.checks.policy")
__all__ = [name for name in vars(_MODULE) if not name.startswith("_")]


def __getattr__(name: str):
    return getattr(_MODULE, name)
