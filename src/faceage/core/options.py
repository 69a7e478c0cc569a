"""Options, typed once.

Values are parsed by type in one place: the CLI, the API, detector options and the training
config all use :func:`coerce`, so ``"false"`` is False everywhere, ``"maybe"`` is refused
everywhere, and an unknown key is one error with a did-you-mean. Numbers read from files (model
records, training configs, checkpoints, age-check policies) are checked by one function,
:func:`number_problem`, whatever error type each reader raises. :class:`FaceOptions` says which
faces of a photo are scored, the same for every entry point."""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from faceage.errors import ConfigError


@dataclass(frozen=True)
class FaceOptions:
    """Which faces of a photo are scored: the same options for predict, batch, Ray, Spark, serve and video.

    ``largest``: only the biggest face; ``max_faces``: the biggest this many (0: all);
    ``min_face``: ignore faces narrower than this many pixels (of the full photo);
    ``fallback``: score a centre crop, marked ``fallback=True``, when no face is found."""

    largest: bool = False
    min_face: int = 0
    max_faces: int = 0
    fallback: bool = False

    def __post_init__(self) -> None:
        for name, kind in (("largest", bool), ("min_face", int), ("max_faces", int), ("fallback", bool)):
            object.__setattr__(self, name, coerce(getattr(self, name), kind, name))
        if self.min_face < 0 or self.max_faces < 0:
            raise ConfigError(f"min_face and max_faces must be 0 or more, not {self.min_face} and {self.max_faces}")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def number_problem(value: Any, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
                   above: bool = False, finite: bool = True, integral_float: bool = False) -> str | None:
    """What is wrong with ``value`` as a number read from a file, or None: a JSON bool is never a number;
    ``integer``: an int (or, with ``integral_float``, a float such as 64.0); ``finite``: no NaN or
    infinity (NaN is never a number); within ``lo``..``hi`` (``above``: strictly above ``lo``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'a whole number' if integer else 'a number'}"
    if math.isnan(value) or (finite and math.isinf(value)):
        return "must be finite"
    if integer and not isinstance(value, int) and not (integral_float and float(value).is_integer()):
        return "must be a whole number"
    low = lo is not None and (value <= lo if above else value < lo)
    if low or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            return f"must be > {lo:g} and <= {hi:g}" if above else f"must be in {lo:g}..{hi:g}"
        return f"must be > {lo:g}" if above else f"must be >= {lo:g}" if lo is not None else f"must be <= {hi:g}"
    return None


def coerce(value: Any, kind: type, name: str) -> Any:
    """``value`` as ``kind`` (bool, int, float, str or tuple), or ConfigError naming ``name``.

    Text is parsed (``"false"`` -> False, ``"8"`` -> 8); a bool is never taken for a number nor a
    number for a bool other than 0 and 1; a float must be finite."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{name}: {value!r} is not {what}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("true or false")
    if kind is int:
        if isinstance(value, bool):
            raise bad("a whole number")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad("a whole number") from None
        raise bad("a whole number")
    if kind is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            out = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(out):
            raise bad("a finite number")
        return out
    if kind is str:
        if not isinstance(value, str):
            raise bad("text")
        return value
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return tuple(value)
    raise TypeError(f"coerce: unsupported kind {kind!r}")


def unknown_key(key: str, known: Iterable[str], where: str) -> ConfigError:
    """The error for an unknown key, with the closest known one."""
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
    return ConfigError(f"unknown {where} {key!r}{hint}")


def typed_options(factory: Callable, options: dict, where: str) -> dict:
    """``options`` for ``factory(**options)``, each coerced to the type of the parameter's default
    (a tuple's items to the type of its first item): unknown keys and bad values are ConfigErrors."""
    params = {n: p.default for n, p in inspect.signature(factory).parameters.items()
              if p.default is not inspect.Parameter.empty}
    out = {}
    for key, value in options.items():
        if key not in params:
            raise unknown_key(key, params, f"{where} option")
        default = params[key]
        if default is None or not isinstance(default, (bool, int, float, str, tuple)):
            out[key] = value
        elif isinstance(default, tuple):
            items = coerce(value, tuple, f"{where} option {key}")
            kind = type(default[0]) if default else None
            out[key] = tuple(coerce(v, kind, f"{where} option {key}") for v in items) if kind else items
        else:
            out[key] = coerce(value, type(default), f"{where} option {key}")
    return out
