"""Which image files a command line names: files, folders (walked in a streamed, sorted order) and glob
patterns; the one folder walk of ``faceage predict``, ``check`` and batch mode. Every file-system oddity
(a folder that cannot be listed, a dangling link, a link loop, a pattern that matches nothing) is an
:class:`~faceage.errors.ImageError` with a code, raised or reported, so one bad path never hides the good ones."""
from __future__ import annotations

import errno
import glob
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from faceage.errors import ImageError
from faceage.core.imageio import IMAGE_SUFFIXES


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _listing(folder: Path, report: Callable[[str, ImageError], None]) -> list:
    """``folder``'s entries sorted by name; [] (reported) when it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        report(str(folder), ImageError(f"{folder}: cannot list the folder ({exc.strerror or exc}); check its "
                                       "permissions", code="unreadable_file"))
        return []


def _walk(folder: Path, recursive: bool, report: Callable[[str, ImageError], None]) -> Iterator[Path]:
    """Image files under ``folder``, streamed: one folder's entries are listed and sorted at a time and
    sub-folders are entered in their place (the order of sorting all paths part by part), so a tree of
    millions of photos starts at once in flat memory, at any depth. Links to folders are not entered
    (no loops). Every file-system oddity goes to ``report`` and the walk goes on: a folder that cannot
    be listed (``unreadable_file``), a dangling link (``file_not_found``), a link loop
    (``symlink_loop``), a file that cannot be examined (``unreadable_file``). Names that are not valid
    UTF-8 come as Python decodes them (surrogate escapes): opening them works, and the batch output
    writers escape them (:func:`faceage.batch.output.escape_path`)."""
    stack = [iter(_listing(folder, report))]
    while stack:
        e = next(stack[-1], None)
        if e is None:
            stack.pop()
            continue
        path = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=False):
                if recursive:
                    stack.append(iter(_listing(path, report)))
            elif not _is_image(path):
                continue
            elif e.is_file():  # follows a link
                yield path
            elif e.is_symlink() and not os.path.exists(e.path):
                report(str(path), ImageError(f"{path}: dangling symbolic link; fix or remove it",
                                             code="file_not_found"))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                report(str(path), ImageError(f"{path}: symbolic link loop (it leads back to itself); fix or "
                                             "remove it", code="symlink_loop"))
            else:
                report(str(path), ImageError(f"{path}: cannot examine it ({exc.strerror or exc}); check its "
                                             "permissions", code="unreadable_file"))


def iter_images(paths: Iterable[str | os.PathLike] | str | os.PathLike, recursive: bool = False,
                on_error: Callable[[str, ImageError], None] | None = None) -> Iterator[Path]:
    """Yield image files from files, folders (image suffixes only, streamed in sorted order: :func:`_walk`)
    and glob patterns: the one folder walk of ``predict`` and batch mode.

    A named file is yielded whatever its suffix (decoding decides); a folder is scanned
    for :data:`IMAGE_SUFFIXES`, recursively when ``recursive``. A path that matches
    nothing, a dangling link, a link loop, an unreadable folder or a file that cannot be
    examined is an :class:`ImageError` with a code: raised, or passed to
    ``on_error(path, error)`` (and the scan goes on) when given, so that one bad path
    never hides the good ones.
    """
    def report(path: str, exc: ImageError) -> None:
        if on_error is None:
            raise exc
        on_error(path, exc)

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for item in paths:
        p = Path(item)
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from _walk(p, recursive, report)
        elif glob.has_magic(str(item)):
            hits = sorted(Path(h) for h in glob.glob(str(item), recursive=recursive))
            hits = [h for h in hits if h.is_file() and _is_image(h)]
            if not hits:
                report(str(item), ImageError(f"{item}: the pattern matches no image files", code="file_not_found"))
            yield from hits
        elif p.is_symlink() and _loops(p):
            report(str(item), ImageError(f"{item}: symbolic link loop (it leads back to itself)", code="symlink_loop"))
        else:
            what = "dangling symbolic link" if p.is_symlink() else "no such file or folder"
            report(str(item), ImageError(f"{item}: {what}", code="file_not_found"))


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False
