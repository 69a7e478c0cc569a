"""How far each model's ages move when the same faces are shown as old prints or in grey.

FG-NET's scanned photos are where the bundled models are worst (children and teenagers read 5-9
years too old). This measures one cause on faces whose labels we trust: seeded validation faces
of a training config (prepared crops), each scored as it is, as an old print (the training
augmentation's scanned-print look drawn for every face: faded contrast lifted towards white, a
resolution loss to ``--scale`` of the size, grain, and a sepia tint of random strength on about 60%
of them; ``faceage.train.augment.old_photo``) and in grey (the augmentation's luminance weights).
Per model and age band (``faceage.metrics.AGE_BANDS``): the mean shift of the predicted age
(styled - as it is). Needs PyTorch.

    python -m benchmarks.photo_style --models fast accurate --write
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from benchmarks._common import add_output_arguments, machine, markdown_table, parse_args, write_results


def styled(crops: np.ndarray, augment_cfg, scale: float, seed: int) -> dict[str, np.ndarray]:
    """The crops as an old print (every face) and in grey, uint8 like the input."""
    import torch

    from faceage.train.augment import GREY, old_photo

    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    cfg = replace(augment_cfg, old_photo=1.0, old_photo_scale=(scale, scale))
    old = old_photo(x, cfg, len(x), torch.Generator().manual_seed(seed))
    grey = np.repeat((crops.astype(np.float32) @ GREY.numpy())[..., None], 3, -1)
    return {"old print": old.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy(),
            "grey": grey.round().astype(np.uint8)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fast", "accurate"], help="bundled names or model files")
    ap.add_argument("--config", default="configs/accurate.yaml", help="training config naming the data sets")
    ap.add_argument("--dataset", default="utkface", help="which of its data sets (its validation split)")
    ap.add_argument("--n", type=int, default=0, help="faces drawn (seeded) from that split (0: all)")
    ap.add_argument("--scale", type=float, default=0.3, help="old print: resolution kept (0.2-0.5 in training)")
    ap.add_argument("--seed", type=int, default=0)
    add_output_arguments(ap)
    a = parse_args(ap, argv)
    from PIL import Image

    from faceage import AgeEstimator
    from faceage.data.sets import load_samples
    from faceage.metrics import AGE_BANDS as BANDS
    from faceage.train.config import load_config

    cfg = load_config(a.config)
    rows = [s for s in load_samples(cfg.data)[0] if s.dataset == a.dataset and s.split == "val"]
    if not rows:
        ap.error(f"{a.config} has no validation rows of a data set {a.dataset!r}")
    rows = [rows[i] for i in np.random.default_rng(a.seed).permutation(len(rows))[:a.n or None]]
    crops = np.stack([np.asarray(Image.open(s.path).convert("RGB")) for s in rows])
    ages = np.array([s.age for s in rows], float)
    styles = styled(crops, cfg.augment, a.scale, a.seed)
    results, table = {}, []
    for model in a.models:
        est = AgeEstimator(model)
        base = est.score_aligned(crops).age
        results[model] = {"mae": round(float(np.abs(base - ages).mean()), 3)}
        for style, c in styles.items():
            shift = est.score_aligned(c).age - base
            per = {b: round(float(shift[(ages >= lo) & (ages <= hi)].mean()), 2) for b, (lo, hi) in BANDS.items()
                   if ((ages >= lo) & (ages <= hi)).any()}
            results[model][style] = {"all": round(float(shift.mean()), 2), **per}
            table.append([model, style, f"{shift.mean():+.2f}", *(f"{per.get(b, float('nan')):+.2f}" for b in BANDS)])
    n_band = {b: int(((ages >= lo) & (ages <= hi)).sum()) for b, (lo, hi) in BANDS.items()}
    head = (f"# Photo style: mean shift of the predicted age (years, styled - as it is)\n\n{len(rows)} "
            f"{a.dataset} validation faces of {a.config} (seed {a.seed}); old print at {a.scale} of the resolution. "
            f"Machine: {machine()}. Command: `python -m benchmarks.photo_style --models {' '.join(a.models)} "
            f"--config {a.config} --dataset {a.dataset} --n {a.n} --scale {a.scale}`\n\n")
    md = head + markdown_table(["model", "style", "all", *(f"{b} (n {n_band[b]})" for b in BANDS)], table)
    write_results("photo_style", {"config": a.config, "dataset": a.dataset, "n": len(rows), "scale": a.scale,
                                  "seed": a.seed, "faces_per_band": n_band, "models": results}, md, a.out)


if __name__ == "__main__":
    main()
