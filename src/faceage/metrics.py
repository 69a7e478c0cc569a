"""Age metrics (numpy only): MAE, cumulative score CS(e), error by age decade, plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from faceage.core.ages import ESTIMATES

CS_LEVELS = tuple(range(11))
#: the age bands where estimates go wrong most and where decisions are taken (inclusive years)
AGE_BANDS = {"0-5": (0, 5), "6-12": (6, 12), "13-17": (13, 17), "18-24": (18, 24), "25-59": (25, 59),
             "60+": (60, 200)}


def balanced_mae(pred, true, bin_years: int = 5) -> float:
    """The mean of the MAE inside each ``bin_years`` age bin that has faces: every stretch of life weighs
    the same, so a model that pulls both ends toward the crowded twenties is not rewarded for it.
    A bin of a handful of faces weighs as much as one of thousands: read it beside the per-bin counts."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    bins = (true // bin_years).astype(np.int64)
    err = np.abs(pred - true)
    return float(np.mean([err[bins == b].mean() for b in np.unique(bins)])) if err.size else float("nan")


def age_metrics(pred, true) -> dict:
    """n, MAE, age-balanced MAE (:func:`balanced_mae`), CS(e) for e = 0..10 (share with |error| <= e
    years), MAE and bias (mean of predicted - true: regression to the mean shows as + for the young,
    - for the old) per decade and per :data:`AGE_BANDS` band."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    err = np.abs(pred - true)
    by_decade = {}
    for lo in range(0, int(true.max(initial=0)) + 1, 10):
        mask = (true >= lo) & (true < lo + 10)
        if mask.any():
            by_decade[f"{lo}-{lo + 9}"] = {"n": int(mask.sum()), "mae": round(float(err[mask].mean()), 3),
                                           "bias": round(float((pred - true)[mask].mean()), 3)}
    by_band = {}
    for name, (lo, hi) in AGE_BANDS.items():
        mask = (true >= lo) & (true <= hi)
        if mask.any():
            by_band[name] = {"n": int(mask.sum()), "mae": round(float(err[mask].mean()), 3),
                             "bias": round(float((pred - true)[mask].mean()), 3)}
    return {
        "n": int(err.size),
        "mae": round(float(err.mean()), 4) if err.size else float("nan"),
        "mae_balanced": round(balanced_mae(pred, true), 4),
        "cs": {str(e): round(float((err <= e).mean()), 4) for e in CS_LEVELS} if err.size else {},
        "mae_by_decade": by_decade,
        "mae_by_band": by_band,
    }


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend; :class:`~faceage.extras.MissingExtraError` without
    the ``plots`` extra."""
    from faceage.extras import require

    require("plots", "plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cs_curves(curves: dict[str, dict], path: str | Path, title: str = "Cumulative score") -> Path:
    """curves: label -> {"e": share}; one line per label (paper Fig. 12)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, cs in curves.items():
        es = sorted(int(e) for e in cs)
        ax.plot(es, [100 * cs[str(e)] for e in es], marker="o", ms=3, label=label)
    ax.set(xlabel="error level e (years)", ylabel="CS(e) (%)", title=title, ylim=(0, 100), xlim=(0, 10))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_error_by_age(pred, true, path: str | Path, title: str = "Error by true age") -> Path:
    plt = _pyplot()
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.scatter(true, pred, s=3, alpha=0.3)
    hi = max(true.max(initial=1), pred.max(initial=1))
    ax1.plot([0, hi], [0, hi], "k--", lw=1)
    ax1.set(xlabel="true age", ylabel="predicted age", title="predicted vs true")
    edges = np.arange(0, hi + 10, 10)
    idx = np.digitize(true, edges) - 1
    maes = [np.abs(pred - true)[idx == i].mean() if (idx == i).any() else np.nan for i in range(len(edges))]
    ax2.bar(edges + 5, maes, width=9)
    ax2.set(xlabel="true age (decade)", ylabel="MAE (years)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_curves(rows: list[dict], path: str | Path) -> Path:
    """Loss and validation MAE per epoch (paper Figs. 9-10) from metrics.csv rows."""
    plt = _pyplot()
    ep = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    ax1.plot(ep, [float(r["val_loss"]) for r in rows], label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    pooled = {"val_mae_dex": "DEX expectation", "val_mae_reg": "regression"}
    per_set = {k: f"{k[len('val_mae_'):]} (estimate)" for k in rows[0] if k.startswith("val_mae_")
               and k[len("val_mae_"):] not in ESTIMATES and rows[0][k] not in (None, "")}
    for key, label in {**pooled, **per_set}.items():
        ax2.plot(ep, [float(r[key]) for r in rows], label=label, ls="--" if key in per_set else "-")
    ax2.set(xlabel="epoch", ylabel="MAE (years)", title="Validation MAE")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
