"""Training input pipeline: decoded uint8 cache + batch augmentation vs decode-per-sample.

Both paths produce the same thing, normalised (B, 3, S, S) batches of the same images, on
one thread: first without augmentation (what the cache saves: decoding), then with the
same augmentation (faceage's, all of it). The plain path is the usual Dataset/DataLoader:
per sample, open and decode the file, resize, (augment,) convert.

    python -m benchmarks.loader_throughput --manifest work/utkface-128/manifest.csv
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from benchmarks._common import add_output_arguments, machine, markdown_table, parse_args, write_results
from PIL import Image

from faceage.core.preprocess import normalize
from faceage.train.augment import augment
from faceage.data.cache import build_cache
from faceage.data.manifest import read_manifest
from faceage.train.config import AugmentConfig
from faceage.models.weights import IMAGENET_MEAN, IMAGENET_STD


class DecodeDataset(torch.utils.data.Dataset):
    def __init__(self, paths, size, augment: bool):
        self.paths, self.size, self.augment = paths, size, augment
        self.g = torch.Generator().manual_seed(0)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]
        if not self.augment:
            return normalize(x, IMAGENET_MEAN, IMAGENET_STD)[0]
        return augment(x, AugmentConfig(), IMAGENET_MEAN, IMAGENET_STD, self.g)[0]


def time_batches(make_batches, n_images: int) -> float:
    start = time.perf_counter()
    seen = 0
    for batch in make_batches():
        seen += batch.shape[0]
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--n", type=int, default=3000, help="images per measurement")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=128)
    add_output_arguments(ap)
    args = parse_args(ap)
    torch.set_num_threads(1)
    samples = read_manifest(args.manifest).samples[: args.n]
    paths = [str(s.path) for s in samples]

    plain = {}
    for aug in (False, True):
        loader = torch.utils.data.DataLoader(DecodeDataset(paths, args.size, aug), batch_size=args.batch, shuffle=True)
        plain[aug] = time_batches(lambda: iter(loader), len(paths))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_cache(samples, args.size, tmp, workers=1, quiet=True)
        build_s = time.perf_counter() - t0
        images = np.asarray(cache.images)
        g = torch.Generator().manual_seed(0)

        def cached_batches(aug: bool):
            perm = torch.randperm(len(images), generator=g).numpy()
            for i in range(0, len(perm), args.batch):
                x = torch.from_numpy(images[np.sort(perm[i : i + args.batch])]).permute(0, 3, 1, 2)
                if aug:
                    yield augment(x, AugmentConfig(), IMAGENET_MEAN, IMAGENET_STD, g)
                else:
                    yield normalize(x, IMAGENET_MEAN, IMAGENET_STD)

        cached = {aug: time_batches(lambda: cached_batches(aug), len(paths)) for aug in (False, True)}
    ratio = {aug: cached[aug] / plain[aug] for aug in (False, True)}
    data = {"machine": machine(), "images": len(paths), "size": args.size, "batch": args.batch, "threads": 1,
            "cache_build_s": round(build_s, 1),
            "loading": {"plain_img_s": round(plain[False], 1), "cached_img_s": round(cached[False], 1),
                        "ratio": round(ratio[False], 2)},
            "loading_and_augmentation": {"plain_img_s": round(plain[True], 1),
                                         "cached_img_s": round(cached[True], 1), "ratio": round(ratio[True], 2)}}
    table = markdown_table(
        ["", "decode per sample (DataLoader), img/s", "uint8 cache + batches (faceage), img/s", "speed-up"],
        [["loading", f"{plain[False]:.0f}", f"{cached[False]:.0f}", f"{ratio[False]:.1f}x"],
         ["loading + augmentation", f"{plain[True]:.0f}", f"{cached[True]:.0f}", f"{ratio[True]:.1f}x"]],
    ) + f"\n\n{len(paths)} images at {args.size} px, batch {args.batch}, on {machine()}; the one-off cache build " \
        f"took {build_s:.1f} s and is reused by every later run on the same files."
    write_results("loader_throughput", data, table, args.out)


if __name__ == "__main__":
    main()
