"""Weight-space ensemble of a model and its fine-tuned descendant (WiSE-FT, Wortsman et al. 2022).

Fine-tuning the bundled model on a new mix of data (configs/fast.yaml) gains on the new
data and loses some of what the start model did well; the weights ``a * start + (1 - a) * tuned`` of
two models on one fine-tuning path usually keep most of both. For each ``a`` and each strength of
the age-prior correction (faceage.data.sets.prior_correction) the validation splits of the config's
data sets are scored the way `faceage predict` scores (faceage.core.scoring.score); the mix kept is the one
with the lowest pooled validation MAE among those no worse than the start model on any data set
(none: the fine-tuned model alone). Its 80% interval is then calibrated on the same splits, and the
weights are written with their record. Only validation data is used to choose.

    python -m scripts.wise_ft --config configs/fast.yaml \
        --start docs/runs/default-model/best.safetensors --tuned runs/default-v2c/best.safetensors \
        --out runs/default-v2-wise
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from faceage.runtime.torch_backend import TorchBackend
from faceage.core.scoring import calibrate_interval, interval_coverage, score
from faceage.train.config import load_config
from faceage.data.sets import cached_splits, load_samples, prior_correction, sampling_weights
from faceage.models.weights import load_model
from faceage.models.write import save_model

ALPHAS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the fine-tuning config (its data sets and sampling)")
    ap.add_argument("--start", required=True, help="the model fine-tuning started from")
    ap.add_argument("--tuned", required=True, help="the fine-tuned model")
    ap.add_argument("--out", required=True, help="folder for best.safetensors and wise_ft.json")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    data = cfg.data
    samples, _, _ = load_samples(data)
    splits = cached_splits(samples, int(data.input_size), data.cache_dir, quiet=True)
    train, val = splits["train"], splits["val"]
    delta = prior_correction(train.ages, sampling_weights(train.ages, train.datasets, data.mix,
                                                          float(data.age_balance), int(data.age_bin)))
    start, record = load_model(a.start)
    tuned, tuned_record = load_model(a.tuned)
    # copies: load_state_dict below writes into the tensors a state_dict() returns
    s0 = {k: v.clone() for k, v in start.state_dict().items()}
    s1 = {k: v.clone() for k, v in tuned.state_dict().items()}
    record = replace(tuned_record, logit_bias=None, interval_temperature=1.0)
    names, ages = val.datasets, val.ages

    def mix(alpha: float) -> dict:
        return {k: (alpha * s0[k].float() + (1 - alpha) * v.float()).to(v.dtype) if v.is_floating_point() else v
                for k, v in s1.items()}
    sets = sorted(set(names.tolist()))

    def maes(age: np.ndarray) -> dict:
        err = np.abs(age - ages)
        return {"pooled": round(float(err.mean()), 4), **{d: round(float(err[names == d].mean()), 4) for d in sets}}

    grid, scored = [], {}
    for alpha in ALPHAS:
        tuned.load_state_dict(mix(alpha))
        raw = score(TorchBackend.from_model(tuned, record, "cpu"), val.images, cfg.eval.tta)
        for strength in STRENGTHS:
            scored[alpha, strength] = replace(raw, logits=raw.logits + strength * delta)
            grid.append({"alpha": alpha, "strength": strength, **maes(scored[alpha, strength].age)})
            print(json.dumps(grid[-1]), flush=True)
    base = next(g for g in grid if g["alpha"] == 1.0 and g["strength"] == 0.0)  # the start model as it is
    fair = [g for g in grid if all(g[d] <= base[d] for d in sets)]
    pick = min(fair, key=lambda g: g["pooled"]) if fair else next(
        g for g in grid if g["alpha"] == 0.0 and g["strength"] == 0.0)
    alpha, strength = pick["alpha"], pick["strength"]
    tuned.load_state_dict(mix(alpha))
    chosen = scored[alpha, strength]
    record.logit_bias = tuple(float(v) for v in strength * delta) if strength else None
    record.interval_temperature = calibrate_interval(chosen, ages)
    chosen = replace(chosen, interval_temperature=record.interval_temperature)
    record.training = {**record.training, "wise_ft": {"start": a.start, "tuned": a.tuned, "alpha_start": alpha,
                                                      "prior_strength": strength, "val_mae": pick}}
    out = Path(a.out)
    save_model(tuned, record, out / "best.safetensors")
    interval = chosen.interval()
    summary = {"pick": pick, "start_model": base, "grid": grid,
               "interval_coverage": {d: interval_coverage(interval, ages, names == d) for d in sets},
               "interval_temperature": record.interval_temperature, "command": " ".join(__import__("sys").argv)}
    (out / "wise_ft.json").write_text(json.dumps(summary, indent=1))
    print(f"kept start weight {alpha}, prior strength {strength}: validation {pick} (start model {base}); "
          f"interval temperature {record.interval_temperature}; -> {out / 'best.safetensors'}")


if __name__ == "__main__":
    main()
