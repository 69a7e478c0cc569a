r"""Chunked, resumable output: Parquet, CSV or JSON Lines, chosen by the file's suffix.

While a run goes, each chunk of rows is written to ``OUTPUT.parts/part-NNNNN.EXT``
atomically (a temporary name, then a rename), so a killed run leaves only whole
chunks. The paths in them (and in ``OUTPUT`` itself, from an earlier finished run)
are done, failed ones included; a rerun skips them (with ``retry_errors`` the rows of
failed paths are removed first, so those paths are tried again). :meth:`PartStore.finish` streams ``OUTPUT`` and the parts
into a new ``OUTPUT``, keeping each path's rows from the first place it appears (so a
run killed during the merge cannot duplicate rows), then removes the parts folder.

Parquet cells keep lists (``box``, ``eyes``, ``age_interval``); CSV writes them as JSON
text and empty cells for missing values, and a text cell that a spreadsheet would run as a
formula (starting ``=``, ``+``, ``-``, ``@``, tab or carriage return) with a leading ``'``
(:func:`csv_text`; read back without it). pyarrow is imported only here, and only
for Parquet (``pip install 'faceage[parquet]'``).

One run owns an output at a time (:class:`OutputLock`: ``OUTPUT.lock``, held with an OS file
lock that dies with its process, naming the owner's pid and host): a second run on the same
output is refused before it touches the parts, and the lock of a dead run is simply taken.

Every file is UTF-8, whatever the file names: a ``path`` is written in the escaped form of
:func:`escape_path` (lossless: a backslash is written ``\\``, a byte of the name that is not
UTF-8 ``\xNN``; every other path as it is) and read back by :func:`unescape_path`.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable, Iterator

from faceage.engine import COLUMNS, SCHEMA
from faceage.errors import FaceageError

_HEX = re.compile(rb"[0-9a-fA-F]{2}")
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
_LIST_COLUMNS = [c for c, t in SCHEMA.items() if t.startswith("array")]


def escape_path(path: str) -> str:
    r"""``path`` as written in an output file: UTF-8 text that gives the name back exactly
    (:func:`unescape_path`). On POSIX a name is bytes, and Python hands one that is not UTF-8 over with
    surrogate escapes, which no UTF-8 writer takes: each such byte is written ``\xNN``, and a backslash
    ``\\`` so that the form stays unambiguous. Other paths (nearly all) are written as they are.
    On Windows (names are Unicode, the backslash is the separator) the path is kept as is."""
    if os.sep == "\\":
        return path
    raw = os.fsencode(path)
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace") if b"\\" in raw or _undecodable(
        raw) else path


def _undecodable(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def unescape_path(text: str) -> str:
    """The path that :func:`escape_path` wrote as ``text``."""
    if os.sep == "\\" or "\\" not in text:
        return text
    raw, out, i = text.encode("utf-8"), bytearray(), 0
    while i < len(raw):
        if raw[i:i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif raw[i:i + 2] == b"\\x" and _HEX.fullmatch(raw[i + 2:i + 4]):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _plain_text(value):
    r"""Free text (an error message naming a path) as UTF-8: undecodable bytes shown as ``\xNN``."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _escaped(row: dict) -> dict:
    return {**row, "path": escape_path(row["path"]), "error": _plain_text(row.get("error"))}


#: first characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = [c for c, t in SCHEMA.items() if t == "string"]


def csv_text(value):
    """A text cell as written to CSV: one ``'`` in front of a cell a spreadsheet would run as a formula, and in
    front of one that already starts with ``'`` (so that :func:`csv_untext` gives every cell back exactly)."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, "'")):
        return "'" + value
    return value


def csv_untext(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def output_format(path: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise FaceageError(f"{path}: unknown output format; name the file .parquet, .csv or .jsonl")
    if fmt == "parquet":
        _pyarrow()
    return fmt


def _pyarrow():
    from faceage.extras import MissingExtraError, message, missing

    absent = missing("parquet")
    if absent:
        raise MissingExtraError(message("parquet", "Parquet output", absent) + "; or name the output .csv or .jsonl")
    import pyarrow
    import pyarrow.parquet

    return pyarrow


def _arrow_type(pa, name: str):
    if name.startswith("array<"):
        return pa.list_(_arrow_type(pa, name[len("array<"):-1]))
    return {"string": pa.string(), "int": pa.int32(), "double": pa.float64(), "boolean": pa.bool_()}[name]


def _arrow_schema():
    pa = _pyarrow()
    return pa.schema([(c, _arrow_type(pa, t)) for c, t in SCHEMA.items()])


class _Writer:
    """Rows appended to one file of ``fmt``, a batch at a time."""

    def __init__(self, fmt: str, path: Path) -> None:
        self.fmt = fmt
        if fmt == "parquet":
            self.pa = _pyarrow()
            self.schema = _arrow_schema()
            self.out = self.pa.parquet.ParquetWriter(path, self.schema)
        else:
            self.out = open(path, "w", newline="", encoding="utf-8")
            if fmt == "csv":
                self.csv = csv.DictWriter(self.out, COLUMNS)
                self.csv.writeheader()

    def write(self, rows: list[dict]) -> None:
        rows = [_escaped(r) for r in rows]
        if self.fmt == "parquet":
            self.out.write_table(self.pa.Table.from_pylist(rows, schema=self.schema))
        elif self.fmt == "csv":
            self.csv.writerows({c: json.dumps(v) if c in _LIST_COLUMNS and v is not None
                                else csv_text(v) if c in _TEXT_COLUMNS else v for c, v in r.items()} for r in rows)
        else:
            self.out.writelines(json.dumps(r) + "\n" for r in rows)

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.out.close()


def read_rows(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of an output file, streamed, with the types they were written with."""
    path = Path(path)
    fmt = output_format(path)
    for row in _read(path, fmt):
        row["path"] = unescape_path(row["path"])
        yield row


def _read(path: Path, fmt: str) -> Iterator[dict]:
    if fmt == "parquet":
        for batch in _pyarrow().parquet.ParquetFile(path).iter_batches():
            yield from ({**dict.fromkeys(COLUMNS), **r} for r in batch.to_pylist())  # a column added later: None
    elif fmt == "csv":
        types = {"int": int, "double": float, "boolean": lambda v: v == "True", "string": csv_untext}
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                yield {c: None if r.get(c, "") == "" else json.loads(r[c]) if c in _LIST_COLUMNS
                       else types[SCHEMA[c]](r[c]) for c in COLUMNS}
    else:
        with open(path, encoding="utf-8") as fh:
            yield from ({**dict.fromkeys(COLUMNS), **json.loads(line)} for line in fh)  # a column added later: None


class OutputLock:
    """``OUTPUT.lock``: this process owns ``output`` while it holds the lock (a context manager).

    The OS lock (``flock``; ``msvcrt.locking`` on Windows) is released by the kernel when its process dies,
    so a stale lock (a killed run) is taken over without anyone deleting anything; the file's text (pid,
    host, start) only names the owner in the refusal. A lock file replaced while we waited for it is
    detected (its inode changed) and locked again."""

    def __init__(self, output: str | os.PathLike) -> None:
        self.path = Path(output).with_name(Path(output).name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _try_lock(fd):
                owner = os.read(fd, 500).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise FaceageError(f"{self.path.with_suffix('')}: another run is writing this output ({owner}); "
                                   "wait for it to finish, or give another --output")
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # its owner finished and removed it after we opened it
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise FaceageError(f"{self.path}: could not take the output's lock (it keeps being replaced)")

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()  # before unlocking: a waiter then sees the inode change
            except OSError:  # Windows cannot remove an open file; the next owner reuses it
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class PartStore:
    """The parts folder of one output file: what is done, new chunks, and the final merge."""

    def __init__(self, output: str | os.PathLike, settings: dict, *, retry_errors: bool = False) -> None:
        self.output = Path(output)
        self.format = output_format(self.output)
        self.folder = self.output.with_name(self.output.name + ".parts")
        self.folder.mkdir(parents=True, exist_ok=True)
        saved = self.folder / "settings.json"
        settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
        if saved.is_file():
            old = json.loads(saved.read_text())
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            if changed:
                raise FaceageError(f"{self.folder}: an unfinished run with other settings ({', '.join(changed)}); "
                                   "rerun it with the same options, or delete that folder to start again")
        saved.write_text(json.dumps(settings, indent=2) + "\n")
        for tmp in self.folder.glob("*.tmp"):  # a chunk whose write was interrupted
            tmp.unlink()
        if retry_errors:
            for src in self.sources():
                self._drop_errors(src)
        self._next = len(self.parts())

    def _drop_errors(self, path: Path) -> None:
        """Rewrite ``path`` without its error rows (atomically), so that those paths count as not done."""
        if not any(r["error"] is not None for r in read_rows(path)):
            return
        tmp = path.with_name(path.name + ".retry.tmp")
        _write_stream(self.format, (r for r in read_rows(path) if r["error"] is None), tmp)
        os.replace(tmp, path)

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob(f"part-*.{self.format}"))

    def sources(self) -> list[Path]:
        """Files holding finished rows, oldest first."""
        return ([self.output] if self.output.is_file() else []) + self.parts()

    def done(self) -> set[str]:
        """Paths already in the output or a finished chunk."""
        return {r["path"] for src in self.sources() for r in read_rows(src)}

    def add(self, rows: list[dict]) -> None:
        """Write one chunk; it counts as done only once it is complete on disk."""
        if not rows:
            return
        final = self.folder / f"part-{self._next:06d}.{self.format}"
        tmp = final.with_name(final.name + ".tmp")
        with _Writer(self.format, tmp) as w:
            w.write(rows)
        os.replace(tmp, final)
        self._next += 1

    def finish(self) -> int:
        """Merge the output and the parts into the output; returns its row count."""
        if self.parts() or not self.output.is_file():
            tmp = self.output.with_name(self.output.name + ".tmp")
            _write_stream(self.format, _first_occurrences(self.sources()), tmp)
            os.replace(tmp, self.output)
        shutil.rmtree(self.folder)  # a finished output with nothing new is left as it is
        return sum(1 for _ in read_rows(self.output))


def _first_occurrences(sources: Iterable[Path]) -> Iterator[dict]:
    seen: set[str] = set()
    for src in sources:
        here: set[str] = set()
        for r in read_rows(src):
            if r["path"] not in seen:
                here.add(r["path"])
                yield r
        seen |= here


def _write_stream(fmt: str, rows: Iterable[dict], path: Path, chunk: int = 10_000) -> None:
    """Write rows ``chunk`` at a time: memory stays bounded whatever the output's size."""
    batch: list[dict] = []
    with _Writer(fmt, path) as w:
        for r in rows:
            batch.append(r)
            if len(batch) == chunk:
                w.write(batch)
                batch = []
        if batch:
            w.write(batch)
