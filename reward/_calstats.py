"""Statistics for a calibrated "P(people prefer A over B)" model and when to trust it.

Four parts, all pure functions over arrays (no I/O, no store):

- metrics of a probability model against people's 0/1 labels (Brier, log-loss, accuracy, ECE,
  reliability-diagram data);
- calibrators that turn raw logits into probabilities (temperature, Platt, isotonic), fitted,
  compared by cross-validation and stored as plain JSON;
- exact binomial intervals, and a Trust-or-Escalate threshold (Jung et al. 2024, fixed-sequence
  testing) that says which items the model may decide alone with a stated guarantee, plus the
  curves a benchmark reports;
- drift checks over windows of a decision stream.

scipy and scikit-learn are imported inside the functions that need them: importing this module
costs only numpy, so the CLI stays quick to answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]

KINDS: tuple[str, ...] = ("none", "temperature", "platt", "isotonic")
"""Calibrator kinds from simplest to most flexible; ties in `choose_calibrator` go leftwards."""

ISOTONIC_EPS = 1e-3
"""Isotonic outputs are kept in [eps, 1 - eps]: a step fitted to a few all-agree items must not
claim certainty, which would cost the whole clipped log-loss (about 14) on the next disagreement."""

_LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))
_PLATT_L2 = 1e-6  # keeps (a, b) finite on separable data; negligible otherwise


def _floats(values: ArrayLike) -> Floats:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _pair(p: ArrayLike, y: ArrayLike) -> tuple[Floats, Floats]:
    p, y = _floats(p), _floats(y)
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length ({p.size} != {y.size})")
    return p, y


def _weights(weights: ArrayLike | None, n: int) -> Floats:
    if weights is None:
        return np.ones(n)
    w = _floats(weights)
    if w.size != n:
        raise ValueError(f"weights differ in length ({w.size} != {n})")
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights must be non-negative with a positive sum")
    return w


def sigmoid(z: ArrayLike) -> Floats:
    """The logistic function, without overflow for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * _floats(z)))


# --- metrics ------------------------------------------------------------------------------------


def brier(p: ArrayLike, y: ArrayLike) -> float:
    """Mean squared error of the probabilities: calibration and sharpness in one number
    (scikit-learn's ``brier_score_loss``)."""
    from sklearn.metrics import brier_score_loss

    p, y = _pair(p, y)
    return float(brier_score_loss(y, p, labels=[0, 1])) if p.size else math.nan


def _log_loss(p: Floats, y: Floats, w: Floats | None, eps: float) -> float:
    from sklearn.metrics import log_loss as sk_log_loss

    # clipped here, not by scikit-learn (which clips at machine epsilon): one confident miss
    # costs -log(eps), about 14 at 1e-6, instead of 36
    q = np.clip(p, eps, 1.0 - eps)
    return float(sk_log_loss(y, q, sample_weight=w, labels=[0, 1]))


def log_loss(p: ArrayLike, y: ArrayLike, eps: float = 1e-6) -> float:
    """Mean negative log-likelihood (scikit-learn's ``log_loss``); p is clipped to
    [eps, 1 - eps] first, so one confident miss is costly but finite."""
    p, y = _pair(p, y)
    return _log_loss(p, y, None, eps) if p.size else math.nan


def accuracy(p: ArrayLike, y: ArrayLike) -> float:
    """Share of labels the model gets right deciding at 0.5; p == 0.5 is a coin toss (half)."""
    p, y = _pair(p, y)
    if not p.size:
        return math.nan
    hit = np.where(p == 0.5, 0.5, ((p > 0.5) == (y > 0.5)).astype(np.float64))
    return float(np.mean(hit))


def reliability(p: ArrayLike, y: ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram's data: per equal-width bin of p, how often label 1 happened.

    scikit-learn's ``calibration_curve`` (strategy "uniform") gives the observed rate and mean p
    of the bins that hold items; the count per bin is added here. Bins follow scikit-learn:
    (lo, hi] with the first closed, so p = 0 falls in the first and p = 0.3 in (0.2, 0.3].
    ``mean_p`` and ``observed`` are None for empty bins.
    """
    from sklearn.calibration import calibration_curve

    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    p, y = _pair(p, y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # the bin scikit-learn puts each item in (calibration_curve does not return the counts)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)
    observed, mean_p = calibration_curve(y, p, n_bins=bins) if p.size else ([], [])
    filled = iter(zip(observed, mean_p, strict=True))
    rows: list[dict[str, Any]] = []
    for b in range(bins):
        row: dict[str, Any] = {
            "lo": round(float(edges[b]), 12),
            "hi": round(float(edges[b + 1]), 12),
            "n": int(counts[b]),
            "mean_p": None,
            "observed": None,
        }
        if counts[b]:
            rate, mean = next(filled)
            row.update(mean_p=float(mean), observed=float(rate))
        rows.append(row)
    return rows


def ece(p: ArrayLike, y: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: the item-weighted gap between stated and observed rates.

    The binary form: bins are equal-width over p (the probability of label 1) in [0, 1], not over
    the top-label confidence max(p, 1 - p), so a model that is overconfident towards 1 and one that
    is overconfident towards 0 are both seen, each in its own bins, and the number reads directly
    off the reliability diagram. ECE = sum_b (n_b / n) * |mean(y_b) - mean(p_b)|.
    """
    rows = reliability(p, y, bins)
    total = sum(row["n"] for row in rows)
    if not total:
        return math.nan
    return float(
        sum(row["n"] / total * abs(row["observed"] - row["mean_p"]) for row in rows if row["n"])
    )


# --- calibrators --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from raw logits to probabilities, storable as plain JSON.

    params by kind: none {}; temperature {"T"}; platt {"a", "b"}; isotonic {"x", "y"}, the fitted
    thresholds over sigmoid(z), applied by linear interpolation and clipped at the ends (what
    IsotonicRegression(out_of_bounds="clip") predicts, without pickling it).
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown calibrator kind {self.kind!r}; expected one of {KINDS}")

    def apply(self, z: ArrayLike) -> Floats:
        """Probabilities of label 1 for raw logits z."""
        z = _floats(z)
        if self.kind == "temperature":
            return sigmoid(z / float(self.params["T"]))
        if self.kind == "platt":
            return sigmoid(float(self.params["a"]) * z + float(self.params["b"]))
        if self.kind == "isotonic":
            x = np.asarray(self.params["x"], dtype=np.float64)
            y = np.asarray(self.params["y"], dtype=np.float64)
            return np.interp(sigmoid(z), x, y)
        return sigmoid(z)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form: the kind and its parameters as floats or lists of floats."""
        params: dict[str, Any] = {}
        for name, value in self.params.items():
            if np.ndim(value):
                params[name] = [float(v) for v in np.asarray(value).reshape(-1)]
            else:
                params[name] = float(value)
        return {"kind": self.kind, "params": params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(kind=str(data["kind"]), params=dict(data.get("params", {})))


def _fit_temperature(z: Floats, y: Floats, w: Floats) -> dict[str, float]:
    from scipy.optimize import minimize_scalar

    # Searched on log T so T stays positive and a factor of 2 either way costs the same steps.
    result = minimize_scalar(
        lambda log_t: _log_loss(sigmoid(z / math.exp(log_t)), y, w, 1e-12),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return {"T": math.exp(float(result.x))}


def _fit_platt(z: Floats, y: Floats, w: Floats) -> dict[str, float]:
    from scipy.optimize import minimize

    w = w / w.sum()

    def loss_and_grad(theta: Floats) -> tuple[float, Floats]:
        a, b = theta
        s = a * z + b
        # log(1 + e^s) - y*s, written to stay finite for large |s|
        loss = np.sum(w * (np.logaddexp(0.0, s) - y * s)) + _PLATT_L2 * (a * a + b * b)
        r = w * (sigmoid(s) - y)
        grad = np.array([np.sum(r * z), np.sum(r)]) + 2.0 * _PLATT_L2 * theta
        return float(loss), grad

    result = minimize(loss_and_grad, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a, b = result.x
    return {"a": float(a), "b": float(b)}


def _fit_isotonic(z: Floats, y: Floats, w: Floats) -> dict[str, list[float]]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(
        y_min=ISOTONIC_EPS, y_max=1.0 - ISOTONIC_EPS, increasing=True, out_of_bounds="clip"
    )
    iso.fit(sigmoid(z), y, sample_weight=w)
    return {
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


def fit_calibrator(
    kind: str, z: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None
) -> Calibrator:
    """Fit a calibrator of `kind` to logits z and 0/1 labels y by weighted log-likelihood.

    temperature: p = sigmoid(z / T), one parameter, keeps the model's ranking and its 0.5 point.
    platt: p = sigmoid(a z + b), also moves the 0.5 point (a model biased towards A or B).
    isotonic: any monotone map, for distortions a sigmoid cannot express; needs more data.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibrator kind {kind!r}; expected one of {KINDS}")
    z, y = _pair(z, y)
    if not z.size:
        raise ValueError("cannot fit a calibrator to no data")
    w = _weights(weights, z.size)
    if kind == "temperature":
        return Calibrator(kind, _fit_temperature(z, y, w))
    if kind == "platt":
        return Calibrator(kind, _fit_platt(z, y, w))
    if kind == "isotonic":
        return Calibrator(kind, _fit_isotonic(z, y, w))
    return Calibrator("none")


def choose_calibrator(
    z: ArrayLike,
    y: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    kinds: Sequence[str] = ("temperature", "platt", "isotonic"),
    folds: int = 5,
    seed: int = 0,
    weights: ArrayLike | None = None,
) -> tuple[str, dict[str, float]]:
    """The calibrator kind with the lowest cross-validated log-loss, and each kind's loss.

    Folds come from scikit-learn's ``StratifiedGroupKFold`` (shuffled by `seed`): items of one
    group never straddle a fold, so the two mirrored rows of one pair (or every pair of one
    prompt) cannot be fitted on one side and scored on the other. Without `groups` every item
    is its own group. Each kind is fitted on k - 1 folds and scored (weighted, if weights are
    given) on the held-out one, and the fold losses averaged. A more flexible kind must beat a
    simpler one outright to be chosen (order: KINDS).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown or no calibrator kinds {list(kinds)}; expected some of {KINDS}")
    z, y = _pair(z, y)
    w = _weights(weights, z.size)
    group = np.arange(z.size) if groups is None else np.asarray(groups).reshape(-1)
    if group.size != z.size:
        raise ValueError(f"groups differ in length ({group.size} != {z.size})")
    smaller_class = int(min(np.sum(y > 0.5), np.sum(y <= 0.5)))
    distinct = len(np.unique(group))
    if folds < 2 or smaller_class < folds or distinct < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} items of each label and "
            f"{folds} groups (fewest of a label: {smaller_class}, groups: {distinct})"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(z.reshape(-1, 1), y > 0.5, group))
    losses: dict[str, float] = {}
    for kind in sorted(set(kinds), key=KINDS.index):
        scores = []
        for train, test in splits:
            calibrator = fit_calibrator(kind, z[train], y[train], w[train])
            scores.append(_log_loss(calibrator.apply(z[test]), y[test], w[test], 1e-6))
        losses[kind] = float(np.mean(scores))
    best = min(losses, key=lambda k: (losses[k], KINDS.index(k)))
    return best, losses


# --- intervals ----------------------------------------------------------------------------------


def _check_counts(k: int, n: int) -> None:
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _proportion_ci(
    k: int, n: int, level: float, method: str, alternative: str = "two-sided"
) -> tuple[float, float]:
    """scipy's ``binomtest(k, n).proportion_ci``; with no trials, all of [0, 1]."""
    from scipy.stats import binomtest

    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n, alternative=alternative).proportion_ci(level, method=method)
    return float(ci.low), float(ci.high)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided 1 - alpha interval for a binomial rate: never covers less than stated."""
    return _proportion_ci(k, n, 1 - alpha, "exact")


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval: close to nominal coverage and sensible at 0 or n events."""
    return _proportion_ci(k, n, 1 - alpha, "wilson")


def binomial_upper(k: int, n: int, alpha: float) -> float:
    """One-sided exact (Clopper-Pearson) upper bound at level 1 - alpha on a rate seen k in n."""
    return _proportion_ci(k, n, 1 - alpha, "exact", alternative="less")[1]


# --- escalation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """Where the model may decide alone: items with confidence >= threshold.

    With probability >= 1 - risk over the calibration draw, those items agree with people at least
    `target` of the time (for new items exchangeable with the calibration set). threshold is None
    when no cut-off can promise that; everything then goes to people.
    """

    threshold: float | None
    target: float
    risk: float
    coverage: float  # share of calibration items decided automatically
    auto: int  # calibration items at or above the threshold
    n: int  # calibration items in all
    agreement: float | None  # observed agreement of the automatic items
    lower_bound: float | None  # its one-sided 1 - risk lower bound

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _confidence_pair(confidence: ArrayLike, correct: ArrayLike) -> tuple[Floats, Floats]:
    c, ok = _floats(confidence), _floats(correct)
    if c.shape != ok.shape:
        raise ValueError(f"confidence and correct differ in length ({c.size} != {ok.size})")
    return c, ok


def _cutoffs(c: Floats, ok: Floats) -> tuple[Floats, NDArray[np.intp], Floats]:
    """Distinct confidences from the highest down, with the items and agreements at or above."""
    order = np.argsort(-c, kind="stable")
    sorted_c, sorted_ok = c[order], ok[order]
    cum_ok = np.cumsum(sorted_ok)
    # the last position of each run of equal confidences closes that cut-off's set
    last = np.flatnonzero(np.append(sorted_c[1:] != sorted_c[:-1], True))
    return sorted_c[last], last + 1, cum_ok[last]


def select_threshold(
    confidence: ArrayLike, correct: ArrayLike, *, target: float, risk: float, min_auto: int = 10
) -> Threshold:
    """The lowest confidence threshold whose automatic decisions meet `target` with the guarantee.

    Fixed-sequence testing (Trust or Escalate, Jung et al. 2024): candidate thresholds are the
    distinct confidences, tested from the highest down; each test rejects "agreement above here is
    below target" when the exact upper bound on disagreement is <= 1 - target, and the first
    failure ends the sequence, which keeps the family-wise error at `risk` without a multiplicity
    correction.

    The sequence starts at the highest cut-off with at least `min_auto` items and enough items
    that a perfect record there could pass (11 for target 0.8 at risk 0.1): a test that cannot
    pass would only end the sequence before it began. Where it starts depends on the confidences
    alone, so the order is still fixed before any agreement is looked at. A larger `min_auto`
    makes the start less fragile (one early disagreement can end a short sequence) at no cost
    to the guarantee.
    """
    from scipy.stats import beta

    c, ok = _confidence_pair(confidence, correct)
    none = Threshold(None, target, risk, 0.0, 0, int(c.size), None, None)
    if not c.size:
        return none
    values, counts, agree = _cutoffs(c, ok)
    # 1 - risk ** (1 / n) is binomial_upper(0, n, risk): the bound after n agreements in n
    could_pass = 1.0 - risk ** (1.0 / counts) <= 1.0 - target
    keep = (counts >= max(min_auto, 1)) & could_pass
    values, counts, agree = values[keep], counts[keep], agree[keep]
    if not values.size:
        return none
    errors = counts - agree
    # binomial_upper(errors, counts, risk) for every cut-off in one call: the Clopper-Pearson
    # bound is this beta quantile, which binomtest's proportion_ci evaluates one count at a time
    # (about 1000 times slower over a calibration split's cut-offs)
    upper = np.ones(counts.size)
    some_agree = errors < counts  # all disagreeing: the bound is 1 (beta.ppf needs n - k > 0)
    upper[some_agree] = beta.ppf(
        1 - risk, errors[some_agree] + 1, counts[some_agree] - errors[some_agree]
    )
    passes = upper <= 1 - target
    failed = np.flatnonzero(~passes)
    last = (failed[0] if failed.size else passes.size) - 1
    if last < 0:
        return none
    n_auto = int(counts[last])
    return Threshold(
        threshold=float(values[last]),
        target=target,
        risk=risk,
        coverage=n_auto / c.size,
        auto=n_auto,
        n=int(c.size),
        agreement=float(agree[last] / n_auto),
        lower_bound=float(1.0 - upper[last]),
    )


def coverage_at(confidence: ArrayLike, correct: ArrayLike, target: float) -> dict[str, Any]:
    """The largest share decided automatically (most confident first) whose observed agreement
    is >= target; no guarantee, what a benchmark reports as "coverage at X% agreement"."""
    c, ok = _confidence_pair(confidence, correct)
    result: dict[str, Any] = {
        "target": target,
        "coverage": 0.0,
        "auto": 0,
        "agreement": None,
        "threshold": None,
    }
    if not c.size:
        return result
    values, counts, agree = _cutoffs(c, ok)
    rates = agree / counts
    meets = np.flatnonzero(rates >= target)
    if meets.size:
        best = meets[-1]  # counts grow along the cut-offs, so the last one covers most
        result.update(
            coverage=float(counts[best] / c.size),
            auto=int(counts[best]),
            agreement=float(rates[best]),
            threshold=float(values[best]),
        )
    return result


def escalation_curve(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    budgets: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    draws: int = 200,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Agreement of the automatic decisions when people take a share of the items: the least
    confident ones versus the same number at random (the value of the model's confidence).

    The escalated count is the budget times the items, rounded half up. Uncertainty escalation
    takes the lowest confidences, ties by position; random escalation is averaged over `draws`
    permutations (shared by all budgets) with a 2.5-97.5 percentile band.
    """
    c, ok = _confidence_pair(confidence, correct)
    total = c.size
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    for budget in budgets:
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"budgets are shares in [0, 1], got {budget}")
    escalated = [min(total, int(math.floor(b * total + 0.5))) for b in budgets]
    # correct among the escalated: a prefix of the items ordered least confident first, or of a
    # random permutation; prefix sums give every budget at once (index m: the first m items)
    by_doubt = np.concatenate([[0.0], np.cumsum(ok[np.argsort(c, kind="stable")])])
    rng = np.random.default_rng(seed)
    at_random = np.empty((draws, len(budgets)))
    for d in range(draws):
        prefix = np.concatenate([[0.0], np.cumsum(ok[rng.permutation(total)])])
        at_random[d] = prefix[escalated]
    right = float(ok.sum())
    rows: list[dict[str, Any]] = []
    for j, (budget, m) in enumerate(zip(budgets, escalated, strict=True)):
        auto = total - m
        row: dict[str, Any] = {
            "budget": float(budget),
            "escalated": m,
            "auto": auto,
            "uncertainty": None,
            "random": None,
            "random_lo": None,
            "random_hi": None,
        }
        if auto:
            rates = (right - at_random[:, j]) / auto
            row.update(
                uncertainty=float((right - by_doubt[m]) / auto),
                random=float(rates.mean()),
                random_lo=float(np.percentile(rates, 2.5)),
                random_hi=float(np.percentile(rates, 97.5)),
            )
        rows.append(row)
    return rows


# --- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftCheck:
    """One window of decisions compared with calibration time, and whether it should alarm."""

    window: str
    n: int
    agreement: float | None
    ci: tuple[float, float] | None  # Wilson interval of the window's agreement
    reference: float | None  # agreement at calibration time
    delta: float | None  # agreement - reference
    calibration_gap: float | None  # mean stated confidence - agreement
    fired: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return data


def _two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided two-proportion z-test: scipy's chi-squared test of the 2x2 table without
    Yates' correction (the same p-value). No difference can show when everything agreed, or
    nothing did."""
    from scipy.stats import chi2_contingency

    if k1 + k2 in (0, n1 + n2):
        return 1.0
    table = [[k1, n1 - k1], [k2, n2 - k2]]
    return float(chi2_contingency(table, correction=False).pvalue)


def check_drift(
    window_name: str,
    correct: ArrayLike,
    confidence: ArrayLike | None,
    *,
    reference_agreement: float | None,
    reference_n: int | None,
    threshold: float = 0.1,
    alpha: float = 0.05,
    min_n: int = 20,
) -> DriftCheck:
    """Has agreement with people moved since calibration, or stopped matching stated confidence?

    Fires when the window has at least `min_n` decisions and either the agreement moved by more
    than `threshold` and significantly (two-proportion z-test against the calibration counts at
    level alpha; with no reference_n the reference is taken as exact and the window's Wilson
    interval must exclude it), or the mean stated confidence is more than `threshold` off the
    agreement and outside its Wilson interval. Both tests need size and significance, so a
    large window does not alarm on a trivial shift and a small one not on noise.
    """
    ok = _floats(correct)
    n = int(ok.size)
    conf = _floats(confidence) if confidence is not None else np.empty(0)
    if conf.size and conf.size != n:
        raise ValueError(f"confidence and correct differ in length ({conf.size} != {n})")
    if not n:
        return DriftCheck(
            window_name, 0, None, None, reference_agreement, None, None, False,
            f"too few decisions (0 < {min_n})",
        )  # fmt: skip
    k = int(round(ok.sum()))
    agreement = k / n
    ci = wilson(k, n, alpha)
    delta = agreement - reference_agreement if reference_agreement is not None else None
    stated = float(conf.mean()) if conf.size else None
    gap = stated - agreement if stated is not None else None

    reasons: list[str] = []
    if reference_agreement is not None and delta is not None and abs(delta) > threshold:
        if reference_n:
            ref_k = int(round(reference_agreement * reference_n))
            p_value = _two_proportion_p(k, n, ref_k, reference_n)
            if p_value < alpha:
                reasons.append(
                    f"agreement {agreement:.2f} vs {reference_agreement:.2f} at calibration "
                    f"({delta:+.2f}, p={p_value:.3g})"
                )
        elif not ci[0] <= reference_agreement <= ci[1]:
            reasons.append(
                f"agreement {agreement:.2f} vs {reference_agreement:.2f} at calibration "
                f"({delta:+.2f}, {1 - alpha:.0%} CI {ci[0]:.2f}-{ci[1]:.2f})"
            )
    if stated is not None and gap is not None and abs(gap) > threshold:
        if not ci[0] <= stated <= ci[1]:
            reasons.append(
                f"stated confidence {stated:.2f} vs agreement {agreement:.2f} ({gap:+.2f}, "
                f"{1 - alpha:.0%} CI {ci[0]:.2f}-{ci[1]:.2f})"
            )

    if n < min_n:
        fired, why = False, f"too few decisions ({n} < {min_n})"
    else:
        fired, why = bool(reasons), "; ".join(reasons) or "stable"
    return DriftCheck(window_name, n, agreement, ci, reference_agreement, delta, gap, fired, why)


_PERIODS = ("day", "week", "month")


def windows(timestamps: Sequence[str], *, period: str = "week") -> list[str]:
    """Window label per ISO-8601 timestamp ("2026-W47", "2026-11-22" or "2026-11"), to group a
    stream of decisions. Timestamps with an offset are read in UTC, so one stream written from
    several time zones falls into the same windows; naive ones are taken as UTC already."""
    if period not in _PERIODS:
        raise ValueError(f"unknown period {period!r}; expected one of {_PERIODS}")
    labels: list[str] = []
    for stamp in timestamps:
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        if period == "day":
            labels.append(moment.date().isoformat())
        elif period == "month":
            labels.append(f"{moment.year:04d}-{moment.month:02d}")
        else:
            year, week, _ = moment.isocalendar()
            labels.append(f"{year:04d}-W{week:02d}")
    return labels
