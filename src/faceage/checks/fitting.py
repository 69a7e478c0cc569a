"""Age checks: "is this person at least ``over``?" answered ``pass`` or ``refer`` (numpy only).

A check reads the odds that the age is at least ``over`` off the face's scored age
distribution (the logits of :func:`faceage.core.scoring.score`, the record's prior correction included;
as log-odds, so that an over-confident network's 0.9999999 and 0.999999999 stay apart), maps them
through a calibration fitted on validation data (so that of faces with ``p_over`` near 0.9 about
90% really are over), and passes a face when those odds reach a threshold chosen on the same
validation data so that at most ``max_share`` (default 1%) of the people just under the
threshold (aged ``over - 5`` to ``over - 1``) pass. The calibration is monotone, so the
threshold is the same on the raw odds and on the calibrated ``p_over``; it is stored as both.
A model record carries one :class:`AgeCheckPolicy` per threshold (``ModelRecord.age_checks``) with the validation
figures behind it; :func:`fit_policy` makes one from any labelled faces. This module fits policies (calibrations,
thresholds, the validation figures); the policy type and applying it live in :mod:`faceage.checks.policy`, whose public
names are re-exported here.

What it is not: a certification. The figures are measured rates on public data sets; who
is referred most, and how often minors pass outside those sets, is in ``docs/age-checks.md``.
"""
from __future__ import annotations

import math

import numpy as np

from faceage.errors import ConfigError
from faceage.checks.policy import (  # noqa: F401 - public here too
    CALIBRATIONS,
    DEFAULT_MAX_SHARE,
    MIN_FIT_FACES,
    AgeCheck,
    AgeCheckPolicy,
    Calibration,
    NoPolicyError,
    _beta_features,
    _sigmoid,
    check_policies,
    checks,
    over_logit,
    policy_for,
    raw_p_over,
)

#: the thresholds a bundled model carries policies for
STANDARD_THRESHOLDS = (13, 16, 18, 21, 25)
#: years just under the threshold whose pass rate the policy bounds: over-5 .. over-1
DEFAULT_BAND = 5
#: how a fitted threshold bounds the band's pass rate: its measured share (``point``, the bundled policies, fitted
#: on hundreds of validation faces per band) or the upper end of its 95% Wilson interval (``wilson``, for user data)
BOUNDS = ("point", "wilson")
#: the maps ``auto`` chooses from: smooth and strictly increasing, so that p_over alone tells the decision
#: (isotonic regression is flat in steps, and 1.0 over its top step, where the thresholds lie)
AUTO_CALIBRATIONS = ("platt", "beta")
ECE_BINS = 10


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a share k/n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |observed share - mean p| per equal-width bin, weighted by rows."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / p.size)


def reliability(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin: rows, mean p and the observed share over (for the reliability diagram)."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [{"bin": [b / bins, (b + 1) / bins], "n": int((idx == b).sum()),
             "mean_p": float(p[idx == b].mean()) if (idx == b).any() else None,
             "observed": float(y[idx == b].mean()) if (idx == b).any() else None} for b in range(bins)]


def _logistic(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights of a logistic regression of y on X's columns and an intercept (last): damped Newton steps
    on the log-loss (a tiny ridge keeps separable data finite)."""
    X = np.concatenate([np.asarray(X, np.float64), np.ones((len(X), 1))], axis=1)
    y = np.asarray(y, np.float64)
    ridge = 1e-4

    def loss(w: np.ndarray) -> float:
        z = X @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * ridge * w @ w)

    w = np.zeros(X.shape[1])
    w[0] = 1.0
    cur = loss(w)
    for _ in range(100):
        q = _sigmoid(X @ w)
        grad = X.T @ (q - y) + ridge * w
        hess = (X * (q * (1 - q))[:, None]).T @ X + ridge * np.eye(len(w))
        step, t = np.linalg.solve(hess, grad), 1.0
        while t > 1e-8 and loss(w - t * step) > cur:  # halve the step until the loss falls
            t /= 2
        w, prev = w - t * step, cur
        cur = loss(w)
        if prev - cur < 1e-10 * max(1.0, abs(cur)):
            break
    return w


def fit_platt(z: np.ndarray, y: np.ndarray) -> Calibration:
    """Logistic regression of y on the raw log-odds z."""
    a, b = _logistic(np.asarray(z, np.float64)[:, None], y)
    if not a > 0:
        raise ValueError("p_over does not rise with the true share over the threshold on these rows: "
                         "the model cannot separate them, so no monotone calibration exists")
    return Calibration("platt", a=float(a), b=float(b))


def fit_beta(z: np.ndarray, y: np.ndarray) -> Calibration:
    """Beta calibration: logistic regression of y on log p and -log(1 - p)."""
    a, c, b = _logistic(_beta_features(z), y)
    if min(a, c) < 0 or a + c <= 0:
        raise ValueError(f"beta calibration is not monotone on these rows (a {a:.3g}, c {c:.3g})")
    return Calibration("beta", a=float(a), b=float(b), c=float(c))


def fit_isotonic(z: np.ndarray, y: np.ndarray) -> Calibration:
    """Pool-adjacent-violators: the non-decreasing step function of z closest to y, as interpolation knots."""
    order = np.argsort(z, kind="stable")
    xs, ys = np.asarray(z, np.float64)[order], np.asarray(y, np.float64)[order]
    vals, wts, xs_lo, xs_hi = [], [], [], []
    for xv, yv in zip(xs, ys):
        vals.append(yv), wts.append(1.0), xs_lo.append(xv), xs_hi.append(xv)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            w = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            wts[-2], xs_hi[-2] = w, xs_hi[-1]
            del vals[-1], wts[-1], xs_lo[-1], xs_hi[-1]
    kx, ky = [], []
    for lo, hi, v in zip(xs_lo, xs_hi, vals):  # each block is flat from its first to its last p
        kx += [lo, hi]
        ky += [v, v]
    kx, ky = np.asarray(kx), np.clip(ky, 0, 1)
    return Calibration("isotonic", x=tuple(map(float, kx)), y=tuple(map(float, ky)))


FITTERS = {"platt": fit_platt, "beta": fit_beta, "isotonic": fit_isotonic}


def choose_calibration(z: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[str, dict]:
    """Of :data:`AUTO_CALIBRATIONS`, the map with the lowest cross-validated ECE (fitted on 4/5 of the rows,
    measured on the fifth, so no map is rewarded for memorising the rows it is scored on); ties go to the
    simpler. Isotonic regression is measured too, for comparison, but never chosen: it is flat in steps."""
    order = np.random.default_rng(seed).permutation(len(z))
    parts = np.array_split(order, folds)
    scores = {}
    for method, fit in FITTERS.items():
        out = np.empty(len(z))
        try:
            for k in range(folds):
                held = parts[k]
                rest = np.concatenate([parts[j] for j in range(folds) if j != k])
                out[held] = fit(z[rest], y[rest])(z[held])
            scores[method] = ece(out, y)
        except ValueError:  # not monotone on some fold: not a candidate
            scores[method] = float("inf")
    best = min(AUTO_CALIBRATIONS, key=lambda m: (round(scores[m], 4), AUTO_CALIBRATIONS.index(m)))
    if not math.isfinite(scores[best]):
        raise ValueError("no monotone calibration fits these rows: p_over does not rise with the share over")
    return best, {m: round(v, 5) for m, v in scores.items()}


def pass_threshold(z_band: np.ndarray, max_share: float, bound: str = "point") -> float:
    """The lowest threshold at which at most ``max_share`` of ``z_band`` pass (z >= threshold): halfway
    between the largest value that must be refused and the next larger one (+1 above the largest).

    ``bound="wilson"``: the upper end of the 95% Wilson interval of the passing share must stay within
    ``max_share``, not the share itself, so a small sample cannot promise what it cannot show (with too few
    faces for any pass to be allowed, none of them passes)."""
    if z_band.size == 0:
        raise ValueError("no validation face in the band under the threshold: the pass rate cannot be bounded")
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {', '.join(BOUNDS)}, not {bound!r}")
    desc = np.sort(np.asarray(z_band, np.float64))[::-1]
    allowed = math.floor(max_share * desc.size + 1e-9)  # the top `allowed` may pass
    if bound == "wilson":
        while allowed > 0 and wilson(allowed, desc.size)[1] > max_share:
            allowed -= 1
    refuse = desc[allowed]
    above = desc[desc > refuse]
    return float(refuse + ((above.min() - refuse) / 2 if above.size else 1.0))


def passed(z: np.ndarray, threshold: float, rows: np.ndarray) -> dict:
    """{n, passed, share, wilson} of ``rows`` (passed: z >= threshold)."""
    n = int(rows.sum())
    k = int((z[rows] >= threshold).sum())
    lo, hi = wilson(k, n)
    return {"n": n, "passed": k, "share": round(k / n, 5) if n else None, "wilson95": [round(lo, 5), round(hi, 5)]}


#: the age bands an age-check report gives each share for (metrics.AGE_BANDS are the error-report bands)
CHECK_BANDS = {"6-12": (6, 12), "13-17": (13, 17), "18-24": (18, 24), "25+": (25, 200)}


def band_rows(ages: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return (ages >= lo) & (ages <= hi)


def fit_policy(z: np.ndarray, ages: np.ndarray, over: int, *, max_share: float = DEFAULT_MAX_SHARE,
               band: int = DEFAULT_BAND, calibration: str = "auto", data: str = "", bound: str = "point",
               min_faces: int = 1) -> AgeCheckPolicy:
    """A policy for "over ``over``" from the raw log-odds z (:func:`over_logit`) of labelled faces
    (validation rows, never test rows).

    The calibration (``auto``: of Platt and beta, the lower cross-validated ECE; see
    :func:`choose_calibration`) is fitted on every row; the threshold lets at most ``max_share`` of the
    rows aged ``over - band .. over - 1`` pass (``bound``: see :func:`pass_threshold`). Fewer than
    ``min_faces`` faces in that band, or over ``over``, is a ValueError."""
    z, ages = np.asarray(z, np.float64), np.asarray(ages)
    if z.shape != ages.shape or z.ndim != 1:
        raise ValueError("z and ages must be 1-D and of the same length")
    if not 0 < max_share < 1:
        raise ValueError(f"max_share must be in (0, 1), not {max_share}")
    y = (ages >= over).astype(np.float64)
    if y.min() == y.max():
        raise ValueError(f"every face is {'over' if y[0] else 'under'} {over}: a calibration needs both")
    chosen, cv = choose_calibration(z, y)
    if calibration == "auto":
        calibration = chosen
    if calibration not in FITTERS:
        raise ValueError(f"calibration must be auto, {', '.join(CALIBRATIONS)}, not {calibration!r}")
    cal = FITTERS[calibration](z, y)
    lo = max(0, over - band)
    in_band = band_rows(ages, lo, over - 1)
    for name, n in ((f"aged {lo}-{over - 1}", int(in_band.sum())), (f"aged {over} or more", int(y.sum()))):
        if 0 < n < min_faces:  # none at all: pass_threshold and the calibration say so
            raise ValueError(f"{n} faces {name}; a policy needs at least {min_faces} there (with fewer, a "
                             "handful of faces would decide how often minors pass)")
    t = pass_threshold(z[in_band], max_share, bound)
    figures = {
        "data": data, "n": int(ages.size), "bound": bound,
        "ece_raw": round(ece(raw_p_over(z), y), 5), "ece_calibrated": round(ece(cal(z), y), 5),
        "ece_cross_validated": cv,
        "band": passed(z, t, in_band),
        "adults": passed(z, t, ages >= over),
        "ages": {name: passed(z, t, band_rows(ages, a, b)) for name, (a, b) in CHECK_BANDS.items()},
    }
    return AgeCheckPolicy(int(over), t, float(cal(np.array([t]))[0]), cal, float(max_share), (lo, over - 1),
                          figures)


def policy_from_data(estimator, data, over: int, *, fmt: str | None = None, max_share: float = DEFAULT_MAX_SHARE,
                     band: int = DEFAULT_BAND) -> AgeCheckPolicy:
    """A policy for ``over`` fitted on labelled faces scored by ``estimator``: a prepared manifest (its
    ``val`` rows when it has a split, else every row) or a data set folder read by the ``fmt`` importer
    (whole pipeline; photos without a face are left out). Never fit on the faces you report as a test.

    User data gets the cautious rule: at least :data:`MIN_FIT_FACES` faces under and over the threshold,
    and the band's pass rate bounded by its Wilson upper bound (``bound="wilson"``)."""
    from faceage.evaluate import eval_crops, load_eval_samples

    samples, _, prealigned = load_eval_samples(data, fmt)
    val = [s for s in samples if s.split == "val"]
    rows = val or samples
    crops, ages, _, fallback, problems = eval_crops(estimator, rows, prealigned=prealigned, quiet=True)
    keep = [i for i, f in enumerate(fallback) if not f]
    if not keep:
        raise ConfigError(f"{data}: no usable face to fit an age-check policy on; first problems: {problems[:3]}")
    z = over_logit(estimator.score_aligned([crops[i] for i in keep]).logits, over)
    try:
        return fit_policy(z, np.asarray(ages)[keep], over, max_share=max_share, band=band,
                          data=f"{data}{' (val rows)' if val else ''}: {len(keep)} faces", bound="wilson",
                          min_faces=MIN_FIT_FACES)
    except ValueError as exc:
        raise ConfigError(f"{data}: cannot fit an age-check policy for over={over}: {exc}") from None
