"""Deprecated name of :mod:`faceage.checks.policy`; it keeps working, with a DeprecationWarning, until 0.3."""
from faceage._moved import forward

__all__, __getattr__ = forward("faceage.policy", "faceage.checks.policy")
