"""Batch mode's file discovery: :func:`faceage.core.walk.iter_images`, the one folder walk (streamed:
a tree of millions of photos is walked one folder at a time, in ``faceage predict``'s order).

Every file-system oddity the walk meets (a folder that cannot be listed, a dangling link, a link
loop, a path that matches nothing) becomes an error row of the output, with its code
(:func:`problem_row`), and the run goes on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from faceage.errors import ImageError
from faceage.core.walk import iter_images


def walk_images(paths: Iterable[str | os.PathLike], recursive: bool = False,
                on_error: Callable[[str, ImageError], None] | None = None) -> Iterator[Path]:
    """Image files under ``paths`` as ``faceage predict`` finds them, folders streamed; problems go to
    ``on_error(path, error)`` (raised without it)."""
    return iter_images(paths, recursive=recursive, on_error=on_error)


def problem_row(path: str, error: ImageError) -> dict:
    """The output row of a path the walk could not use."""
    from faceage.engine import empty_row

    return empty_row(path, str(error), error.code)
