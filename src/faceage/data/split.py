"""Seeded train/val/test splits that keep a subject, and byte-identical duplicates, on one side."""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from pathlib import Path

from faceage.data.manifest import Sample


def file_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """A file's content hash, read in 1 MiB blocks (sha1: the split's duplicate keys, which must not change)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def group_keys(samples: list[Sample]) -> list[str]:
    """One key per sample: its subject where known, else the content hash of its source file.

    Byte-identical files (UTKFace has 340 such groups) therefore share a key,
    and a person never straddles two splits.
    """
    keys = []
    for s in samples:
        if s.subject:
            keys.append(f"subject:{s.subject}")
        else:
            src = s.source if s.source and Path(s.source).is_file() else s.path
            keys.append(f"content:{file_digest(src)}")
    return keys


def assign_splits(samples: list[Sample], ratios: dict[str, float], seed: int = 0) -> list[str]:
    """Split names for ``samples`` in proportion to ``ratios``, whole groups at a time."""
    if not ratios or any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise ValueError(f"bad split ratios {ratios}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(group_keys(samples)):
        groups[key].append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = sum(ratios.values())
    names = list(ratios)
    targets = [len(samples) * ratios[n] / total for n in names]
    result = [""] * len(samples)
    filled = [0] * len(names)
    k = 0
    for key in order:
        # the split furthest below its target takes the next group
        k = max(range(len(names)), key=lambda j: targets[j] - filled[j])
        for i in groups[key]:
            result[i] = names[k]
        filled[k] += len(groups[key])
    return result
