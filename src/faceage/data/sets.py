"""Data sets for training: from a config's ``data`` section to cached train/val arrays, and how an epoch samples them."""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from faceage.data.cache import build_cache
from faceage.data.manifest import Sample, prepared_crop, read_manifest
from faceage.data.split import assign_splits
from faceage.errors import ConfigError, ManifestError
from faceage.face.align import CropSpec

class DataSource(Protocol):
    """What this module reads of a training config's ``data`` section (``faceage.train.config.DataConfig``
    has it): which manifests or folder, how they are split and how many rows are used."""

    manifest: Any
    path: Any
    format: Any
    datasets: Any
    mix: Any
    limit: Any
    split_ratios: Any
    split_seed: Any


CROP_KEYS = ("eye_distance", "eye_y", "margin")  # geometry; the pixel size may differ (crops are resized)


@dataclass
class SplitData:
    images: np.ndarray  # (n, S, S, 3) uint8 (memory-mapped)
    ages: np.ndarray  # (n,) int64
    samples: list[Sample]

    @property
    def datasets(self) -> np.ndarray:
        """(n,) data set name per row ("data" where a single manifest has none)."""
        return np.array([s.dataset or "data" for s in self.samples])


def crop_differences(a: CropSpec | None, b: CropSpec | None, names=("model", "data")) -> list[str]:
    """Differences between two crop geometries ([] = they match)."""
    if a is None and b is None:
        return []
    if a is None or b is None:
        return [f"{names[0]} crop {a and a.to_dict()} vs {names[1]} crop {b and b.to_dict()}"]
    return [f"{k}: {names[0]} {getattr(a, k)} vs {names[1]} {getattr(b, k)}" for k in CROP_KEYS
            if abs(float(getattr(a, k)) - float(getattr(b, k))) > 1e-6]


def load_samples(data: DataSource) -> tuple[list[Sample], list[str], CropSpec | None]:
    """Samples split as training splits them (:func:`with_splits`), problems, and the crop spec they were
    prepared with (None if not known).

    With ``data.datasets`` each named manifest is split on its own (seeded, duplicate-aware) and
    its rows are tagged with its name; all of them must be cropped with the same geometry. ``data.limit``
    then also bounds the rows of all data sets together."""
    samples, problems, crop = _read_samples(data)
    return with_splits(samples, data), problems, crop


def _read_samples(data: DataSource) -> tuple[list[Sample], list[str], CropSpec | None]:
    if data.datasets:  # load_config has checked that manifest and path are unset
        samples, problems, crop, first = [], [], None, None
        for name, manifest in data.datasets.items():
            m = read_manifest(manifest)
            this = prepared_crop(manifest)
            if first is None:
                first, crop = name, this
            elif diff := crop_differences(crop, this, (first, name)):
                raise ConfigError(f"data.datasets: {name} ({manifest}) is cropped unlike {first}: {'; '.join(diff)}; "
                                  "prepare every data set with the same --size/--eye-distance/--eye-y/--margin")
            samples += [replace(s, dataset=str(name)) for s in with_splits(m.samples, data)]
            problems += m.problems
        return samples, problems, crop
    if data.manifest:
        manifest = read_manifest(data.manifest)
        return manifest.samples, manifest.problems, prepared_crop(data.manifest)
    if data.path:
        from faceage.data.importers import import_dataset

        imported = import_dataset(data.format, data.path)
        return imported.samples, imported.problems, None
    raise ConfigError("set data.manifest (a CSV), data.datasets ({name: CSV}) or data.path (a data set folder)")


def with_splits(samples: list[Sample], data: DataSource) -> list[Sample]:
    """Keep the manifest's train/val split if it has one, else make a seeded grouped split."""
    if data.limit:
        samples = sorted(samples, key=lambda s: str(s.path))
        random.Random(data.split_seed).shuffle(samples)
        samples = samples[: int(data.limit)]
    names = {s.split for s in samples}
    if {"train", "val"} <= names:
        return samples
    splits = assign_splits(samples, data.split_ratios, seed=data.split_seed)
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


def sampling_weights(ages: np.ndarray, datasets: np.ndarray, mix: dict | None, age_balance: float,
                     age_bin: int) -> np.ndarray:
    """Per-row probabilities of being drawn for an epoch (they sum to 1).

    Each data set gets its ``mix`` share (by size when None); inside it, an age bin of ``age_bin``
    years with ``c`` rows is drawn in proportion to ``c ** (1 - age_balance)``: 0 keeps the data's
    own age mix, 1 draws every bin equally often (children and the old as often as the crowded
    20s), values between soften the pull to the middle ages."""
    names = sorted(set(datasets.tolist()))
    if mix is not None:
        unknown = set(mix) - set(names)
        if unknown:
            raise ConfigError(f"data.mix names {sorted(unknown)}, not among the data sets {names}")
        missing = set(names) - set(mix)
        if missing:
            raise ConfigError(f"data.mix gives no share for {sorted(missing)}")
    shares = {n: float(mix[n]) if mix is not None else float((datasets == n).sum()) for n in names}
    total = sum(shares.values())
    w = np.zeros(len(ages), np.float64)
    bins = np.asarray(ages) // int(age_bin)
    for n in names:
        rows = datasets == n
        b = bins[rows]
        counts = np.bincount(b)
        per_bin = counts.astype(np.float64) ** (1.0 - age_balance)  # the bin's mass
        wr = per_bin[b] / counts[b]  # shared among its rows
        w[rows] = wr / wr.sum() * shares[n] / total
    return w / w.sum()


def prior_correction(ages: np.ndarray, weights: np.ndarray, num_classes: int = 101, smooth: float = 2.0) -> np.ndarray:
    """Per-age logit offsets log p_data(age) - log p_drawn(age) (101 values).

    A network trained on rows drawn with ``weights`` learns the drawn age prior; adding these offsets to
    its logits puts back the data's own prior (logit adjustment), so balanced sampling can shape the
    features without moving every estimate towards the rare ages. Both histograms are smoothed with a
    Gaussian of ``smooth`` years and floored at 0.1% of the mean bin, so empty ages stay finite."""
    a = np.clip(np.asarray(ages), 0, num_classes - 1)

    def prior(w: np.ndarray) -> np.ndarray:
        h = np.bincount(a, weights=w, minlength=num_classes).astype(np.float64)
        x = np.arange(-4 * smooth, 4 * smooth + 1)
        k = np.exp(-0.5 * (x / smooth) ** 2)
        h = np.convolve(h, k / k.sum(), mode="same")
        h += 1e-3 * h.sum() / num_classes
        return h / h.sum()

    return (np.log(prior(np.ones(len(a)))) - np.log(prior(np.asarray(weights, np.float64)))).astype(np.float32)
