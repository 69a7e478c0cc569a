"""Whether a model file is intact: digests of its record and its weights, and the bundled files' pinned digests.

Every model file faceage writes carries ``faceage.sha256`` beside its record (safetensors metadata, ONNX
``metadata_props``): ``{"record": sha256 of the record's JSON text, "weights": sha256 of the weights}``.
Loading recomputes both and refuses a file where either differs, naming which (``bad_model_file``): a flipped
byte in the weights or a hand-edited record never answers. A digest is not a signature: it catches damage
and edits, not someone who recomputes it; the bundled files are therefore also checked whole against the
digests pinned beside them (``faceage/models/SHA256SUMS``). Files written before digests existed load unchecked (``faceage
models --info FILE`` says so).

The weights digest of a safetensors file covers every tensor's name, dtype, shape and bytes (name order);
of an ONNX file, every top-level field of the serialized model except ``metadata_props`` (field 14), read
with a few lines of protobuf wire format, so ONNX Runtime alone (no ``onnx`` package) can check it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from faceage.errors import WeightsError

#: the metadata keys of a model file (safetensors header or ONNX metadata_props): the record, and its digests
RECORD_KEY, DIGEST_KEY = "faceage", "faceage.sha256"
#: the bundled model files and their sha256 as released (``sha256sum`` format, beside them)
BUNDLED_DIR = Path(__file__).resolve().parent


def _pinned() -> dict[str, str]:
    try:
        lines = (BUNDLED_DIR / "SHA256SUMS").read_text().splitlines()
    except OSError:
        return {}
    return {name: digest for digest, name in (line.split(None, 1) for line in lines if line.strip())}


PINNED = _pinned()
_ONNX_METADATA_FIELD = 14  # ModelProto.metadata_props


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tensors_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.newbyteorder('<').str}|{list(a.shape)}\n".encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _onnx_fields(data: bytes):
    """(field number, start, value start, end) of each top-level field of a serialized protobuf message."""
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        wire, value = key & 7, i
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, value = _varint(data, i)
            i = value + n
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {start}")
        if i > len(data):
            raise ValueError(f"field at byte {start} runs past the end of the file")
        yield key >> 3, start, value, i


def onnx_digest(data: bytes) -> str:
    """sha256 of a serialized ONNX model's top-level fields except its metadata (graph, opsets, versions)."""
    h = hashlib.sha256()
    for field, start, _, end in _onnx_fields(data):
        if field != _ONNX_METADATA_FIELD:
            h.update(data[start:end])
    return h.hexdigest()


def onnx_metadata(data: bytes) -> dict[str, str]:
    """A serialized ONNX model's ``metadata_props`` (key -> value), read without onnx or ONNX Runtime."""
    meta = {}
    for field, _, value, end in _onnx_fields(data):
        if field == _ONNX_METADATA_FIELD:
            item = data[value:end]  # a StringStringEntryProto: key = 1, value = 2
            entry = {f: item[v:e].decode("utf-8") for f, _, v, e in _onnx_fields(item)}
            meta[entry.get(1, "")] = entry.get(2, "")
    return meta


def digest_entry(record_json: str, weights: str) -> str:
    """The ``faceage.sha256`` value written beside a record."""
    return json.dumps({"record": text_digest(record_json), "weights": weights}, sort_keys=True)


def verify(source: str | Path, meta: Mapping[str, str], weights: str | None) -> str:
    """Check a file's stored digests against its record text (``meta[RECORD_KEY]``) and, when given, the
    weights digest computed from the file; returns "verified" or "absent" (a file written before digests)."""
    stored = meta.get(DIGEST_KEY)
    if stored is None:
        return "absent"
    try:
        want = json.loads(stored)
        record_want, weights_want = want["record"], want["weights"]
    except (ValueError, TypeError, KeyError):
        raise WeightsError(f"{source}: bad model file: its {DIGEST_KEY} entry is not a digest record; the file is "
                           "damaged: re-export or reinstall it") from None
    if text_digest(meta.get(RECORD_KEY, "")) != record_want:
        raise WeightsError(f"{source}: bad model file: the faceage record does not match its digest (it was edited "
                           "or damaged after the model was written); re-export the model, or reinstall faceage "
                           "for a bundled one")
    if weights is not None and weights != weights_want:
        raise WeightsError(f"{source}: bad model file: the weights do not match their digest (the file is damaged "
                           "or was altered); re-export the model, or reinstall faceage for a bundled one")
    return "verified"


def pinned_digest(path: Path) -> str | None:
    """The pinned sha256 of ``path`` if it is one of the bundled model files, else None."""
    path = Path(path)
    if path.name not in PINNED:
        return None
    try:
        return PINNED[path.name] if path.resolve().parent == BUNDLED_DIR else None
    except OSError:
        return None


def check_pinned(path: Path, data: bytes) -> bool:
    """True if ``path`` is a bundled model file whose bytes (``data``, as loaded) match its pinned digest; a
    bundled file that does not match is refused; any other file: False (its own digests are checked instead)."""
    want = pinned_digest(path)
    if want is None:
        return False
    if hashlib.sha256(data).hexdigest() != want:
        raise WeightsError(f"{path}: bad model file: this bundled model does not match the digest faceage "
                           "was released with (the installed file was altered or damaged); reinstall faceage")
    return True
