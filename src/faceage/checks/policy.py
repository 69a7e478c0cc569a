"""Age-check policies as a model carries them, and applying one (numpy only; what inference needs).

A check reads the odds that the age is at least ``over`` off the face's scored age
distribution (the logits of :func:`faceage.core.scoring.score`, the record's prior correction included;
as log-odds, :func:`over_logit`, so that an over-confident network's 0.9999999 and 0.999999999 stay
apart), maps them through the policy's :class:`Calibration` (fitted on validation data, so that of
faces with ``p_over`` near 0.9 about 90% really are over), and passes a face when those odds reach
the policy's threshold. The calibration is monotone, so the threshold is the same on the raw odds and
on the calibrated ``p_over``; it is stored as both, and a record whose two disagree is refused.
Fitting policies on labelled faces is :mod:`faceage.checks.fitting`, which also re-exports these names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from faceage.errors import ConfigError
from faceage.core.options import number_problem

DEFAULT_MAX_SHARE = 0.01
#: the fewest faces under the threshold (in the band) and over it that a policy may rest on
MIN_FIT_FACES = 50
CALIBRATIONS = ("platt", "beta", "isotonic")
#: how far a stored policy threshold may differ from its calibration at the stored logit threshold (rounding)
THRESHOLD_TOLERANCE = 1e-6


def over_logit(logits: np.ndarray, over: int) -> np.ndarray:
    """log P(age >= over) - log P(age < over) per row of (N, C) logits over the whole ages 0..C-1
    (the raw p_over is its sigmoid)."""
    z = np.asarray(logits, np.float64)
    if not 1 <= int(over) < z.shape[-1]:
        raise ValueError(f"over={over}: an age check needs a threshold in 1..{z.shape[-1] - 1}")
    return _logsumexp(z[:, int(over):]) - _logsumexp(z[:, :int(over)])


def raw_p_over(z: np.ndarray) -> np.ndarray:
    """The network's own P(age >= over), before calibration, from :func:`over_logit`'s log-odds."""
    return _sigmoid(z)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the raw log-odds z of being over (:func:`over_logit`) to the calibrated p_over.

    ``platt``: sigmoid(a * z + b) (a > 0; a < 1 softens an over-confident model);
    ``beta``: sigmoid(a * log p + c * -log(1 - p) + b) with p = sigmoid(z), a, c >= 0 (Kull et al. 2017:
    Platt with a different slope on each side; c = a is Platt);
    ``isotonic``: linear interpolation through the knots (x: log-odds, y: p), both non-decreasing."""

    method: str
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        if self.method == "platt":
            return _sigmoid(self.a * z + self.b)
        if self.method == "beta":
            return _sigmoid(_beta_features(z) @ np.array([self.a, self.c]) + self.b)
        return np.interp(z, self.x, self.y)

    def to_dict(self) -> dict:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "beta":
            return {"method": "beta", "a": self.a, "b": self.b, "c": self.c}
        return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d) -> "Calibration":
        """A checked calibration; ValueError says what is wrong."""
        if not isinstance(d, dict) or d.get("method") not in CALIBRATIONS:
            raise ValueError(f"calibration must be an object with method {', '.join(CALIBRATIONS)}")
        if d["method"] == "beta":
            a, b, c = (_finite(d.get(k), f"calibration.{k}") for k in "abc")
            if min(a, c) < 0 or a + c <= 0:
                raise ValueError(f"calibration a and c must be >= 0 and not both 0 (a monotone map), not {a}, {c}")
            return cls("beta", a=a, b=b, c=c)
        if d["method"] == "platt":
            a, b = _finite(d.get("a"), "calibration.a"), _finite(d.get("b"), "calibration.b")
            if a <= 0:
                raise ValueError(f"calibration.a must be positive (a monotone map), not {a}")
            return cls("platt", a=a, b=b)
        x, y = d.get("x"), d.get("y")
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or len(x) < 2:
            raise ValueError("isotonic calibration needs lists x and y of the same length (at least 2)")
        x = tuple(_finite(v, "calibration.x") for v in x)
        y = tuple(_finite(v, "calibration.y") for v in y)
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or min(y) < 0 or max(y) > 1:
            raise ValueError("isotonic calibration knots must be non-decreasing, and y within 0..1")
        return cls("isotonic", x=x, y=y)


def _finite(v, name: str) -> float:
    if number_problem(v):
        raise ValueError(f"{name} must be a finite number, not {v!r}")
    return float(v)


def _beta_features(z: np.ndarray) -> np.ndarray:
    """(log p, -log(1 - p)) of p = sigmoid(z), computed from z without rounding p to 0 or 1."""
    z = np.asarray(z, np.float64)
    return np.stack([-np.logaddexp(0.0, -z), np.logaddexp(0.0, z)], axis=-1)


@dataclass(frozen=True)
class AgeCheckPolicy:
    """How an "over N" check decides: pass when the raw log-odds of being over reach ``logit_threshold``
    (the same as: when the calibrated p_over reaches ``threshold``, the calibration being monotone).

    The threshold was chosen so that at most ``max_share`` of the validation faces aged
    ``band[0]..band[1]`` passed; ``validation`` holds the figures behind it."""

    over: int
    logit_threshold: float
    threshold: float  # calibrated p_over at logit_threshold (for people; logit_threshold decides)
    calibration: Calibration
    max_share: float = DEFAULT_MAX_SHARE
    band: tuple[int, int] = (0, 0)
    validation: dict = field(default_factory=dict)

    def calibrated(self, z: np.ndarray) -> np.ndarray:
        return self.calibration(z)

    def decide(self, z: float) -> str:
        return "pass" if z >= self.logit_threshold else "refer"

    def summary(self) -> dict:
        """What a caller needs to know about the policy (not the full validation figures)."""
        return {"over": self.over, "threshold": self.threshold, "logit_threshold": self.logit_threshold,
                "max_share": self.max_share, "band": list(self.band), "calibration": self.calibration.method}

    def warnings(self) -> list[str]:
        """What is valid but extreme about this policy (``faceage models --info``)."""
        out = []
        name = f"over {self.over}"
        if self.threshold < 0.5:
            out.append(f"{name}: passes faces whose calibrated p_over is only {self.threshold:.3f} (below even odds)")
        cal = self.calibration
        slopes = [cal.a] if cal.method == "platt" else [cal.a, cal.c] if cal.method == "beta" else []
        if any(a > 10 or 0 < a < 0.1 for a in slopes):
            out.append(f"{name}: an extreme {cal.method} calibration (slope {max(slopes, key=lambda a: abs(a - 1)):g})")
        band = self.validation.get("band") or {}
        if band.get("n") is not None and band["n"] < MIN_FIT_FACES:
            out.append(f"{name}: fitted on only {band['n']} faces aged {self.band[0]}-{self.band[1]}")
        if band.get("share") is not None and band["share"] > self.max_share:
            out.append(f"{name}: {100 * band['share']:.1f}% of those aged {self.band[0]}-{self.band[1]} passed in "
                       f"validation, above its own max_share {100 * self.max_share:.1f}%")
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["band"] = list(self.band)
        d["calibration"] = self.calibration.to_dict()
        return d

    @classmethod
    def from_dict(cls, d, num_classes: int = 101) -> "AgeCheckPolicy":
        """A checked policy; ValueError names the bad field."""
        if not isinstance(d, dict):
            raise ValueError("an age-check policy must be an object")
        unknown = sorted(set(d) - {"over", "logit_threshold", "threshold", "calibration", "max_share", "band",
                                   "validation"})
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        over = d.get("over")
        if isinstance(over, bool) or not isinstance(over, int) or not 1 <= over < num_classes:
            raise ValueError(f"over must be a whole age in 1..{num_classes - 1}, not {over!r}")
        logit_threshold = _finite(d.get("logit_threshold"), "logit_threshold")
        threshold = _finite(d.get("threshold"), "threshold")
        max_share = _finite(d.get("max_share", DEFAULT_MAX_SHARE), "max_share")
        if not 0 <= threshold <= 1 or not 0 < max_share < 1:
            raise ValueError(f"threshold must be in 0..1 and max_share in (0, 1), not {threshold}, {max_share}")
        band = d.get("band", [0, 0])
        if (not isinstance(band, list) or len(band) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                    for v in band) or band[0] > band[1]):
            raise ValueError(f"band must be [first age, last age], not {band!r}")
        if band != [0, 0] and band[1] != over - 1:
            raise ValueError(f"band must end at over - 1 = {over - 1} (the ages just under the threshold), not {band}")
        validation = d.get("validation", {})
        if not isinstance(validation, dict):
            raise ValueError("validation must be an object")
        calibration = Calibration.from_dict(d.get("calibration"))
        derived = float(calibration(np.array([logit_threshold]))[0])
        if abs(derived - threshold) > THRESHOLD_TOLERANCE:
            raise ValueError(f"threshold {threshold:.6g} disagrees with its calibration at logit_threshold "
                             f"{logit_threshold:.6g}, which gives {derived:.6g}: one of them was edited")
        return cls(over, logit_threshold, threshold, calibration, max_share, tuple(band), validation)


def check_policies(value, num_classes: int = 101) -> dict[int, AgeCheckPolicy]:
    """A record's ``age_checks`` JSON ({"18": policy, ...} or null) -> {18: AgeCheckPolicy}; ValueError if bad."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("age_checks must be an object {threshold: policy} or null")
    out = {}
    for key, d in value.items():
        try:
            policy = AgeCheckPolicy.from_dict(d, num_classes)
        except ValueError as exc:
            raise ValueError(f"age_checks[{key}]: {exc}") from None
        if str(policy.over) != str(key):
            raise ValueError(f"age_checks[{key}] holds the policy for over={policy.over}")
        out[policy.over] = policy
    return dict(sorted(out.items()))


class NoPolicyError(ConfigError):
    """The model carries no policy for this threshold."""

    code = "no_policy"


def policy_for(record, over: int) -> AgeCheckPolicy:
    """The record's policy for ``over``, or an error that says which thresholds it has and what to do."""
    policies = getattr(record, "age_checks", None) or {}
    if int(over) in policies:
        return policies[int(over)]
    have = ", ".join(map(str, policies)) or "none"
    raise NoPolicyError(f"this model has no age-check policy for over={over} (it has: {have}); use one of those, "
                        "or fit a policy on labelled faces (faceage check --fit-on MANIFEST, or "
                        "faceage.checks.fitting.fit_policy) and pass it as policy=")


@dataclass(frozen=True)
class AgeCheck:
    """One face's answer to "at least ``policy.over``?"."""

    box: tuple[int, int, int, int] | None  # as in FaceAge; None for an aligned crop
    age: float | None  # the point estimate, one decimal (as predict gives it); None only with an error
    p_over: float | None  # calibrated P(age >= over); None only with an error
    decision: str  # "pass" or "refer" (always "refer" with an error)
    policy: AgeCheckPolicy = field(repr=False)  # kilobytes of validation figures: not in the one-line repr
    error: str | None = None  # the model's outputs were NaN or infinite (code faceage.core.scoring.BAD_OUTPUT)

    def __repr__(self) -> str:
        p = "None" if self.p_over is None else f"{self.p_over:.4f}"
        err = "" if self.error is None else f", error={self.error!r}"
        return (f"AgeCheck(over={self.policy.over}, box={self.box}, age={self.age}, p_over={p}, "
                f"decision={self.decision!r}{err})")

    def line(self) -> str:
        """``faceage check``'s text for this face."""
        if self.error is not None:  # NaN or infinite model outputs: referred, no age
            return f"box {_box(self.box)} {self.decision}: {self.error} [bad_model_output]"
        return f"box {_box(self.box)} age {self.age:.1f} p_over({self.policy.over}) {self.p_over:.3f} {self.decision}"

    def to_dict(self) -> dict:
        d = {"box": None if self.box is None else list(self.box), "age": self.age,
             "p_over": None if self.p_over is None else round(self.p_over, 4), "decision": self.decision}
        if self.error is not None:
            from faceage.core.scoring import BAD_OUTPUT

            d.update(error=self.error, code=BAD_OUTPUT)
        return d


def _box(box) -> str:
    return "(aligned crop)" if box is None else str(list(box))


def checks(scores, policy: AgeCheckPolicy, boxes=None, model: str = "model") -> list[AgeCheck]:
    """AgeCheck per row of :class:`faceage.core.scoring.Scores` (``boxes``: one per row, or None); a row whose
    outputs are NaN or infinite is referred, with the error and no age (never a pass)."""
    from faceage.core.scoring import bad_output_message

    with np.errstate(invalid="ignore", over="ignore"):
        z = over_logit(scores.logits, policy.over)
        p = policy.calibrated(z)
    boxes = [None] * len(z) if boxes is None else boxes
    return [AgeCheck(b, round(float(a), 1), float(q), policy.decide(float(zi)), policy) if ok
            else AgeCheck(b, None, None, "refer", policy, bad_output_message(model))
            for b, a, q, zi, ok in zip(boxes, scores.age, p, z, scores.finite)]
