"""From a config's ``data`` section to cached train/val arrays."""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from faceage.data.cache import build_cache
from faceage.data.manifest import Sample, prepared_crop, read_manifest
from faceage.data.split import assign_splits
from faceage.errors import ConfigError, ManifestError


@dataclass
class SplitData:
    images: np.ndarray  # (n, S, S, 3) uint8 (memory-mapped)
    ages: np.ndarray  # (n,) int64
    samples: list[Sample]


def load_samples(data: dict) -> tuple[list[Sample], list[str], dict | None]:
    """Samples, problems, and the crop spec they were prepared with (None if not known)."""
    if data.get("manifest"):
        manifest = read_manifest(data["manifest"])
        return manifest.samples, manifest.problems, prepared_crop(data["manifest"])
    if data.get("path"):
        from faceage.data.importers import import_dataset

        imported = import_dataset(data["format"], data["path"])
        return imported.samples, imported.problems, None
    raise ConfigError("set data.manifest (a CSV) or data.path (a data set folder)")


def with_splits(samples: list[Sample], data: dict) -> list[Sample]:
    """Keep the manifest's train/val split if it has one, else make a seeded grouped split."""
    if data.get("limit"):
        samples = sorted(samples, key=lambda s: str(s.path))
        random.Random(data["split_seed"]).shuffle(samples)
        samples = samples[: int(data["limit"])]
    names = {s.split for s in samples}
    if {"train", "val"} <= names:
        return samples
    splits = assign_splits(samples, data["split_ratios"], seed=data["split_seed"])
    return [replace(s, split=name) for s, name in zip(samples, splits)]


def cached_splits(samples: list[Sample], size: int, cache_dir, quiet: bool = False) -> dict[str, SplitData]:
    cache = build_cache(samples, size, cache_dir, quiet=quiet)
    kept = [samples[i] for i in cache.index]
    out = {}
    for name in ("train", "val", "test"):
        rows = np.array([i for i, s in enumerate(kept) if s.split == name], dtype=np.int64)
        if rows.size:
            out[name] = SplitData(
                images=cache.images[rows] if rows.size < len(kept) else np.asarray(cache.images),
                ages=np.array([kept[i].age for i in rows], dtype=np.int64),
                samples=[kept[i] for i in rows],
            )
    for name in ("train", "val"):
        if name not in out:
            raise ManifestError(f"no usable image in the {name!r} split")
    return out
