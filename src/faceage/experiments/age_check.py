"""``faceage experiment age-check``: how often an "over N" check passes each age band, and the policies.

Each data set (``--data LABEL=SOURCE``) is scored the way ``faceage check`` scores (prepared crops as
they are, raw photos through detect -> align -> crop; :func:`faceage.evaluate.eval_crops`), and for each
threshold the report gives the share passed per age band (6-12, 13-17, 18-24, 25+), by gender and race
where the data has them (UTKFace file names), with Wilson 95% intervals; the trade-off between the
people just under the threshold and those over it as the pass threshold moves (the policy marked, and
a threshold on the point age for comparison); and the reliability diagram of p_over before and after
calibration with its ECE.

``--fit LABEL,...`` fits the policies (:func:`faceage.checks.fitting.fit_policy`) on those sets pooled (their
validation rows: never a set you report as held out), and ``--write-model FILE ...`` stores them in
model files' records. Without ``--fit`` the model's own policies are reported.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faceage.checks.fitting import (CHECK_BANDS, DEFAULT_BAND, DEFAULT_MAX_SHARE, STANDARD_THRESHOLDS, AgeCheckPolicy,
                              band_rows, ece, fit_policy, over_logit, passed, policy_for, raw_p_over,
                              reliability)
from faceage.errors import ConfigError, FaceageError
from faceage.experiments.report import data_fingerprint, md_table, provenance, write_report

SOURCES_HELP = ("LABEL=SOURCE, SOURCE one of: CONFIG.yaml:DATASET (the validation split of a data set of a "
                "training config, rebuilt as training made it), MANIFEST.csv (prepared crops, every row), "
                "FORMAT:FOLDER (raw photos through the whole pipeline, e.g. fgnet:../shared/data/fgnet)")


@dataclass
class ScoredSet:
    """One data set's faces, scored once: everything the report and the fit need."""

    label: str
    source: str
    pipeline: str
    ages: np.ndarray  # (n,) true ages
    age: np.ndarray  # (n,) point estimates
    logits: np.ndarray  # (n, C) the age distributions' logits (prior correction included)
    found: np.ndarray  # (n,) False: no face found (raw photos), so `check` gives no decision: never a pass
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    unreadable: int = 0


def load_source(spec: str):
    """``LABEL=SOURCE`` -> (label, samples, prealigned, source text)."""
    label, sep, source = spec.partition("=")
    if not sep or not label or not source:
        raise ConfigError(f"--data {spec!r}: give {SOURCES_HELP}")
    head, colon, tail = source.rpartition(":")
    if colon and head.endswith((".yaml", ".yml")):
        from faceage.data.sets import load_samples
        from faceage.train.config import load_config

        data = load_config(head).data
        if tail not in (data.datasets or {}):
            raise ConfigError(f"--data {spec!r}: {head} has no data set {tail!r} (it has: "
                              f"{', '.join(data.datasets or {}) or 'none'})")
        samples = [s for s in load_samples(data)[0] if s.dataset == tail and s.split == "val"]
        return label, samples, True, f"{tail} validation split of {head}"
    from faceage.evaluate import load_eval_samples

    if colon and not Path(source).exists():
        samples, _, prealigned = load_eval_samples(tail, head)
        return label, samples, prealigned, f"{head} photos in {tail}"
    samples, _, prealigned = load_eval_samples(source, None)
    return label, samples, prealigned, f"{'prepared crops' if prealigned else 'images'} of {source}"


def score_source(est, spec: str, quiet: bool = True) -> ScoredSet:
    from faceage.data.importers import utkface_groups
    from faceage.evaluate import eval_crops

    label, samples, prealigned, text = load_source(spec)
    if not samples:
        raise FaceageError(f"--data {spec!r}: no rows")
    crops, ages, paths, fallback, problems = eval_crops(est, samples, prealigned=prealigned, quiet=quiet)
    if not crops:
        raise FaceageError(f"--data {spec!r}: no readable image; first problems: {problems[:3]}")
    scores = est.score_aligned(crops)
    sources = {str(s.path): str(s.source or s.path) for s in samples}
    names = [sources.get(p, p) for p in paths]
    groups = utkface_groups(names) if "utkface" in spec.lower() else {}
    return ScoredSet(label, text, "prepared crops" if prealigned else "whole pipeline (detect, align, crop)",
                     np.asarray(ages, np.int64), scores.age, scores.logits.astype(np.float32),
                     ~np.asarray(fallback, bool), {g: m for g, m in groups.items() if m.any()},
                     data_fingerprint(samples), len(problems))


def fit_policies(sets: list[ScoredSet], thresholds, max_share: float, band: int,
                 note: str) -> dict[int, AgeCheckPolicy]:
    """Policies fitted on the pooled faces of ``sets`` (only faces found: a face-less photo has no p_over)."""
    ages = np.concatenate([s.ages[s.found] for s in sets])
    logits = np.concatenate([s.logits[s.found] for s in sets])
    data = " + ".join(f"{s.label} ({int(s.found.sum())} faces: {s.source})" for s in sets)
    return {o: _noted(fit_policy(over_logit(logits, o), ages, o, max_share=max_share, band=band, data=data), note)
            for o in thresholds}


def _noted(policy: AgeCheckPolicy, command: str) -> AgeCheckPolicy:
    return replace(policy, validation={**policy.validation, "command": command})


def set_results(s: ScoredSet, policy: AgeCheckPolicy) -> dict:
    """The share passed per age band (all, and per group), ECE before/after, the reliability bins."""
    f = s.found
    z = over_logit(s.logits, policy.over)
    raw, cal = raw_p_over(z), policy.calibrated(z)
    z = np.where(f, z, -np.inf)  # no face: never passes
    y = (s.ages >= policy.over).astype(float)
    t = policy.logit_threshold
    bands = {name: passed(z, t, band_rows(s.ages, a, b)) for name, (a, b) in CHECK_BANDS.items()}
    for name, (a, b) in CHECK_BANDS.items():
        rows = band_rows(s.ages, a, b) & f
        err = s.age[rows] - s.ages[rows]
        bands[name].update(mae=round(float(np.abs(err).mean()), 3) if rows.any() else None,
                           bias=round(float(err.mean()), 3) if rows.any() else None)
    return {
        "over": policy.over,
        "under_band": passed(z, t, band_rows(s.ages, *policy.band)),
        "over_threshold": passed(z, t, s.ages >= policy.over),
        "bands": bands,
        "groups": {g: {name: passed(z, t, band_rows(s.ages, a, b) & m)
                       for name, (a, b) in CHECK_BANDS.items()} for g, m in s.groups.items()},
        "ece_raw": round(ece(raw[f], y[f]), 5), "ece_calibrated": round(ece(cal[f], y[f]), 5),
        "reliability_raw": reliability(raw[f], y[f]), "reliability_calibrated": reliability(cal[f], y[f]),
    }


def trade_off(s: ScoredSet, policy: AgeCheckPolicy) -> dict:
    """Share passed of those just under the threshold vs of those over it, as the pass threshold moves:
    on p_over (its log-odds: the same order), and on the point age (for comparison)."""
    under, over = band_rows(s.ages, *policy.band) & s.found, (s.ages >= policy.over) & s.found
    out = {}
    for name, score in (("p_over", over_logit(s.logits, policy.over)), ("point age", s.age)):
        cuts = np.unique(np.quantile(score[under | over], np.linspace(0, 1, 400)))
        out[name] = {"under": [float((score[under] >= c).mean()) if under.any() else 0.0 for c in cuts],
                     "over": [float((score[over] >= c).mean()) if over.any() else 0.0 for c in cuts]}
    return out


def _plots(sets: list[ScoredSet], policies: dict[int, AgeCheckPolicy], results: dict, out: Path) -> list[Path]:
    from faceage.metrics import _pyplot

    plt = _pyplot()
    images = []
    n = len(policies)
    for s in sets:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
        for ax, (o, pol) in zip(axes[0], policies.items()):
            curves = trade_off(s, pol)
            for name, c in curves.items():
                ax.plot(100 * np.array(c["under"]), 100 * np.array(c["over"]), label=f"threshold on {name}",
                        lw=1.2, ls="-" if name == "p_over" else "--")
            r = results[s.label][str(o)]
            ax.plot(100 * (r["under_band"]["share"] or 0), 100 * (r["over_threshold"]["share"] or 0), "o",
                    color="crimson", label="shipped policy")
            ax.set(xscale="symlog", xlim=(0, 100), ylim=(0, 100), title=f"over {o}",
                   xlabel=f"aged {pol.band[0]}-{pol.band[1]} passed (%)", ylabel=f"aged {o}+ passed (%)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{s.label}: trade-off", fontsize=10)
        fig.tight_layout()
        images.append(out / f"tradeoff_{s.label}.png")
        fig.savefig(images[-1], dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
        for ax, o in zip(axes[0], policies):
            r = results[s.label][str(o)]
            for key, name in (("reliability_raw", f"raw (ECE {r['ece_raw']:.3f})"),
                              ("reliability_calibrated", f"calibrated (ECE {r['ece_calibrated']:.3f})")):
                pts = [(b["mean_p"], b["observed"]) for b in r[key] if b["n"] >= 10]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=name)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set(xlim=(0, 1), ylim=(0, 1), title=f"over {o}", xlabel="p_over (bin mean)",
                   ylabel="share really over")
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{s.label}: reliability (bins with >= 10 faces)", fontsize=10)
        fig.tight_layout()
        images.append(out / f"reliability_{s.label}.png")
        fig.savefig(images[-1], dpi=100)
        plt.close(fig)
    return images


def _cell(r: dict) -> str:
    if not r["n"]:
        return "-"
    lo, hi = r["wilson95"]
    return f"{100 * r['share']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}, n {r['n']})"


def _markdown(sets: list[ScoredSet], policies: dict[int, AgeCheckPolicy], results: dict, fitted: str) -> str:
    bands = list(CHECK_BANDS)
    md = [("Share of faces **passed** by each threshold's policy, per age band, with Wilson 95% intervals "
           "and the number of faces. A photo where no face is found gets no check, so it is never passed "
           "(counted as not passed)."), "", f"Policies: {fitted}", ""]
    md += [md_table(["over", "pass if calibrated p_over >=", "calibration", "max share passed of", "fit: passed",
                     "fit: aged over passed", "fit ECE: raw", "calibrated (out-of-fold: Platt / beta / isotonic)"],
                    [[o, f"{p.threshold:.6f}", p.calibration.method,
                      f"{100 * p.max_share:g}% of {p.band[0]}-{p.band[1]}",
                      _cell(p.validation.get("band", {"n": 0})), _cell(p.validation.get("adults", {"n": 0})),
                      f"{p.validation.get('ece_raw', float('nan')):.4f}",
                      " / ".join(f"{v:.4f}" for v in (p.validation.get("ece_cross_validated") or {}).values())]
                     for o, p in policies.items()]), "",
           ("ECE: expected calibration error of p_over (10 equal bins) on all faces of the fit, before calibration "
            "and, for each candidate map, out of fold (5-fold: fitted on 4/5, measured on the rest). The map with "
            "the lower out-of-fold ECE of Platt and beta is kept (both smooth and strictly increasing, so a face "
            "passes exactly when its p_over reaches the threshold; isotonic is shown for comparison). Below, the "
            "ECE on each set uses the stored map as it is (for the fit sets: in sample)."), ""]
    for s in sets:
        md += [f"## {s.label}", "", f"{s.source}; {s.pipeline}; {len(s.ages)} faces"
               + (f", {int((~s.found).sum())} photos without a face found" if (~s.found).any() else "")
               + (f", {s.unreadable} unreadable" if s.unreadable else "") + ".", ""]
        rows = []
        for o in policies:
            r = results[s.label][str(o)]
            rows.append([f"over {o}", *[_cell(r["bands"][b]) for b in bands], _cell(r["under_band"]),
                         f"{r['ece_raw']:.4f} -> {r['ece_calibrated']:.4f}"])
        md += [md_table(["policy", *bands, "just under (band)", "ECE raw -> calibrated"], rows), ""]
        r18 = results[s.label].get("18") or results[s.label][str(next(iter(policies)))]
        md += ["Error of the point age per band (MAE / bias, years): " + ", ".join(
            f"{b} {r18['bands'][b]['mae']} / {r18['bands'][b]['bias']:+}" for b in bands
            if r18["bands"][b]["mae"] is not None) + ".", ""]
        if s.groups:
            for o in policies:
                r = results[s.label][str(o)]
                md += [f"### {s.label}, over {o}, by group", "",
                       md_table(["group", *bands],
                                [[g, *[_cell(v[b]) for b in bands]] for g, v in r["groups"].items()]),
                       ""]
        md += [f"![trade-off {s.label}](tradeoff_{s.label}.png)", "",
               f"![reliability {s.label}](reliability_{s.label}.png)", ""]
    return "\n".join(md)


def run_age_check(model: str | None, data: list[str], out: str | Path, *, thresholds=STANDARD_THRESHOLDS,
                  fit: list[str] | None = None, max_share: float = DEFAULT_MAX_SHARE, band: int = DEFAULT_BAND,
                  write_models: list[str] | None = None, tta: str = "zoomflip", command: str | None = None,
                  quiet: bool = True) -> dict:
    from faceage.estimator import AgeEstimator

    out = Path(out)
    thresholds = sorted({int(t) for t in thresholds})
    est = AgeEstimator(model, tta=tta)
    if write_models and not fit:
        raise ConfigError("--write-model stores fitted policies: give --fit LABEL,... too")
    labels = [d.partition("=")[0] for d in data]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--data labels must differ: {labels}")
    unknown = sorted(set(fit or []) - set(labels))
    if unknown:
        raise ConfigError(f"--fit names {unknown}, not among the --data labels {labels}")
    sets = []
    for spec in data:
        sets.append(score_source(est, spec, quiet))
        if not quiet:
            print(f"{sets[-1].label}: {len(sets[-1].ages)} faces scored", flush=True)
    cmd = command or ""
    if fit:
        policies = fit_policies([s for s in sets if s.label in fit], thresholds, max_share, band, cmd)
        fitted = f"fitted by this command on {' + '.join(fit)}"
    else:
        policies = {o: policy_for(est.record, o) for o in thresholds}
        fitted = f"the model's own ({policies[thresholds[0]].validation.get('data', 'no data noted')})"
    results = {s.label: {str(o): set_results(s, p) for o, p in policies.items()} for s in sets}
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(sets, policies, results, out)  # placed in the Markdown section of their data set
    # before the model files change: the code version is that of the tree the command ran in
    prov = provenance(command, {"model": str(est.model_path), "tta": tta, "thresholds": thresholds, "fit": fit,
                                "max_share": max_share, "band": band, "written": list(write_models or [])},
                      data={s.label: s.fingerprint for s in sets})
    for path in write_models or []:
        _store(path, est.record, policies)
    model_file = Path(est.model_path)
    # of the file as it is now (with the policies, when they were written into it)
    prov["config"]["model_sha256"] = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16] if model_file.is_file() \
        else None
    doc_results = {"policies": {str(o): p.to_dict() for o, p in policies.items()}, "sets": results,
                   "faces": {s.label: {"n": len(s.ages), "no_face": int((~s.found).sum()), "source": s.source,
                                       "pipeline": s.pipeline} for s in sets},
                   "plots": [p.name for p in images]}
    return write_report(out, "Age checks: share passed per age band", _markdown(sets, policies, results, fitted),
                        doc_results, prov)


def _store(path: str, record, policies: dict[int, AgeCheckPolicy]) -> Path:
    """Write ``policies`` into a model file's record; the file must hold the model that was scored."""
    p = Path(path)
    if p.suffix == ".onnx":
        from faceage.export import read_onnx_record, write_onnx_record

        have, write = read_onnx_record(p), write_onnx_record
    else:
        from faceage.models.weights import read_record
        from faceage.models.write import write_record

        have, write = read_record(p), write_record
    if replace(have, age_checks={}) != replace(record, age_checks={}):
        raise ConfigError(f"{p}: its record differs from the scored model's; write policies only into the same model")
    return write(p, replace(have, age_checks=dict(policies)))


def check_thresholds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--thresholds {text!r}: give whole ages, e.g. 13,16,18,21,25") from None
    if not values or not all(1 <= v <= 100 for v in values):
        raise ConfigError(f"--thresholds {text!r}: give whole ages in 1..100")
    return values
