from collections import Counter

import numpy as np
from PIL import Image

from faceage.data.cache import build_cache
from faceage.data.manifest import Sample, read_manifest, write_manifest
from faceage.data.split import assign_splits


def _samples(tmp_path, n=60, dup_every=5):
    out = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        value = (i // dup_every) * 7 if i % dup_every < 2 else i + 100  # pairs of byte-identical files
        Image.fromarray(np.full((8, 8, 3), value % 256, np.uint8)).save(p)
        out.append(Sample(path=p, age=i % 80))
    return out


def test_split_ratios_and_duplicates_on_one_side(tmp_path):
    samples = _samples(tmp_path)
    names = assign_splits(samples, {"train": 7, "val": 2, "test": 1}, seed=3)
    counts = Counter(names)
    assert abs(counts["train"] - 42) <= 2 and abs(counts["val"] - 12) <= 2 and abs(counts["test"] - 6) <= 2
    by_content = {}
    for s, name in zip(samples, names):
        by_content.setdefault(s.path.read_bytes(), set()).add(name)
    assert all(len(v) == 1 for v in by_content.values())
    assert names == assign_splits(samples, {"train": 7, "val": 2, "test": 1}, seed=3)  # seeded
    assert names != assign_splits(samples, {"train": 7, "val": 2, "test": 1}, seed=4)


def test_subjects_stay_together(tmp_path):
    samples = [Sample(path=p.path, age=p.age, subject=f"p{i % 9}") for i, p in enumerate(_samples(tmp_path))]
    names = assign_splits(samples, {"train": 7, "val": 2}, seed=0)
    sides = {}
    for s, name in zip(samples, names):
        sides.setdefault(s.subject, set()).add(name)
    assert all(len(v) == 1 for v in sides.values()) and set(names) == {"train", "val"}


def test_cache_is_reused_and_skips_corrupt_files(tmp_path):
    samples = _samples(tmp_path, n=10)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    samples.append(Sample(path=bad, age=3))
    cache = build_cache(samples, 16, tmp_path / "cache", quiet=True)
    assert cache.images.shape == (10, 16, 16, 3) and list(cache.index) == list(range(10))
    assert len(cache.problems) == 1 and "bad.jpg" in cache.problems[0]
    again = build_cache(samples, 16, tmp_path / "cache", quiet=True)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, cache.images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    (tmp_path / "0.png").write_bytes((tmp_path / "5.png").read_bytes())  # content changed -> new key
    build_cache(samples, 16, tmp_path / "cache", quiet=True)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_manifest_roundtrip_relative_paths(tmp_path):
    samples = _samples(tmp_path, n=3)
    path = write_manifest([Sample(s.path, s.age, "a", "train") for s in samples], tmp_path / "m.csv")
    assert "0.png,0,a,train" in path.read_text()
    m = read_manifest(path)
    assert [s.path for s in m.samples] == [s.path.resolve() for s in samples] and m.splits == ["train"]
