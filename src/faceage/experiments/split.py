"""``faceage experiment split``: a seeded train/val/test split written into a manifest.

Whole groups move together: a subject (when the manifest has subject ids) or a
set of byte-identical source files (``faceage prepare`` marks these with a
``dup-<hash>`` pseudo-subject; without it the source files' content hashes are
compared), so no person and no duplicate image straddles two splits.
"""
from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from faceage.data.manifest import Sample, read_manifest, write_manifest
from faceage.data.split import assign_splits, group_keys
from faceage.errors import ConfigError

DEFAULT_RATIOS = "7:2:1"
SPLIT_NAMES = ("train", "val", "test")


def parse_ratios(text: str | dict) -> dict[str, float]:
    """``7:2:1`` (train:val:test), ``7:2`` or ``train=7,val=2,test=1`` -> {"train": 7.0, ...}."""
    if isinstance(text, dict):
        ratios = {str(k): float(v) for k, v in text.items()}
    elif "=" in text:
        ratios = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            ratios[name.strip()] = float(value)
    else:
        values = [float(v) for v in text.replace("/", ":").split(":")]
        if len(values) > len(SPLIT_NAMES):
            raise ConfigError(f"ratios {text!r}: at most {len(SPLIT_NAMES)} parts (train:val:test)")
        ratios = dict(zip(SPLIT_NAMES, values))
    ratios = {k: v for k, v in ratios.items() if v > 0}
    if not {"train", "val"} <= set(ratios) or any(v < 0 for v in ratios.values()):
        raise ConfigError(f"ratios {text!r}: need positive train and val parts, e.g. 7:2:1")
    return ratios


def split_samples(samples: list[Sample], ratios: dict[str, float] | str = DEFAULT_RATIOS, seed: int = 0,
                  keys: list[str] | None = None) -> list[Sample]:
    """``samples`` with ``split`` set, grouped by subject / duplicate content (see module doc)."""
    ratios = parse_ratios(ratios) if isinstance(ratios, str) else ratios
    if keys is None:
        names = assign_splits(samples, ratios, seed=seed)
    else:  # precomputed group keys (e.g. shared between an aligned and an unaligned copy)
        proxies = [replace(s, subject=k) for s, k in zip(samples, keys)]
        names = assign_splits(proxies, ratios, seed=seed)
    return [replace(s, split=n) for s, n in zip(samples, names)]


def split_violations(samples: list[Sample], keys: list[str] | None = None) -> list[str]:
    """Groups (subjects / duplicate files) found in more than one split; [] when the split is clean."""
    keys = keys if keys is not None else group_keys(samples)
    where: dict[str, set] = defaultdict(set)
    for s, k in zip(samples, keys):
        where[k].add(s.split)
    return [f"{k} in {sorted(map(str, v))}" for k, v in sorted(where.items()) if len(v) > 1]


def age_histograms(samples: list[Sample], bin_years: int = 10, width: int = 40) -> str:
    """Per-split counts by age bin, as text bars (shares within each split)."""
    by_split: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        by_split[s.split or "-"][s.age // bin_years] += 1
    bins = sorted({b for c in by_split.values() for b in c})
    order = [n for n in SPLIT_NAMES if n in by_split] + sorted(set(by_split) - set(SPLIT_NAMES))
    total = len(samples)
    lines = []
    for name in order:
        counts = by_split[name]
        n = sum(counts.values())
        mean = sum(s.age for s in samples if (s.split or "-") == name) / n
        lines.append(f"{name}: {n} images ({100 * n / total:.1f}%), mean age {mean:.1f}")
        for b in bins:
            share = counts[b] / n
            lines.append(f"  {b * bin_years:3d}-{b * bin_years + bin_years - 1:<3d} {counts[b]:6d} {100 * share:5.1f}% "
                         + "#" * round(share * width))
    return "\n".join(lines)


def split_manifest(manifest: str | Path, out: str | Path | None = None, ratios: str | dict = DEFAULT_RATIOS,
                   seed: int = 0, backup: bool = True) -> dict:
    """Split the rows of ``manifest``; write to ``out`` or (``out=None``) in place after a backup copy."""
    manifest = Path(manifest)
    m = read_manifest(manifest)
    ratios = parse_ratios(ratios)
    keys = group_keys(m.samples)
    samples = split_samples(m.samples, ratios, seed, keys=keys)
    bad = split_violations(samples, keys)
    assert not bad, bad  # assign_splits moves whole groups; a violation is a bug
    target = Path(out) if out else manifest
    saved = None
    if out is None and backup:
        saved = manifest.with_name(manifest.name + ".bak")
        if saved.exists():
            saved = manifest.with_name(f"{manifest.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        shutil.copy2(manifest, saved)
    if out is not None and Path(out).resolve().parent != manifest.resolve().parent:
        prep = manifest.parent / "prepare.json"  # the crop geometry travels with the manifest
        if prep.is_file() and not (Path(out).parent / "prepare.json").exists():
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(prep, Path(out).parent / "prepare.json")
    write_manifest(samples, target)
    counts = Counter(s.split for s in samples)
    total = sum(ratios.values())
    return {
        "manifest": str(target), "backup": str(saved) if saved else None, "seed": seed,
        "ratios": ratios, "groups": len(set(keys)),
        "counts": {n: counts.get(n, 0) for n in ratios},
        "shares": {n: round(counts.get(n, 0) / len(samples), 4) for n in ratios},
        "targets": {n: round(r / total, 4) for n, r in ratios.items()},
        "dropped_rows": m.problems,
        "histograms": age_histograms(samples),
    }
