"""Streamed file discovery: a tree of millions of photos is walked one folder at a time.

:func:`faceage.imageio.iter_images` sorts a whole recursive listing before yielding the
first file; here a folder's own entries are listed and sorted, sub-folders are entered
in their place, and files are yielded as they are met. The order is the same (paths
sorted part by part), so batch output follows ``faceage predict``'s order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from faceage.imageio import IMAGE_SUFFIXES, iter_images


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if recursive:
                yield from _walk(Path(e.path), recursive)
        elif e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES and not e.name.startswith("."):
            yield Path(e.path)


def walk_images(paths: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[Path]:
    """Image files under ``paths`` as ``faceage predict`` finds them, folders streamed."""
    for item in paths:
        if Path(item).is_dir():
            yield from _walk(Path(item), recursive)
        else:  # a file or a glob pattern: imageio's rules (and errors) apply
            yield from iter_images([item], recursive=recursive)
