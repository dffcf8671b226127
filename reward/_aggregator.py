"""The learned reward aggregator: P(people prefer A over B) from the critics' scores.

The profile's weighted mean says how good each candidate is; people say which of two they
prefer. This model learns from their decisions how to read the critics: a logistic model over
antisymmetric features of the pair (per-dimension score differences, the same weighted by the
critics' confidence, the profile reward's difference, vetoes, and how much the critics agree),
fitted without an intercept on both orders of every pair, so that P(A over B) = 1 - P(B over
A) and the order a reviewer saw them in cannot matter. Its raw probability is then calibrated
(temperature, Platt or isotonic, whichever cross-validates best) so that a stated 0.8 means
people agree four times in five.

``fit_reward_model`` keeps a calibration split apart from everything it fits, and picks there
the confidence threshold above which a pair is decided without a person: with probability
1 - risk those automatic decisions agree with people at least ``target`` of the time (fixed-
sequence testing, as in Trust or Escalate, Jung et al. 2024). Pure numpy over plain data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _calstats as cs
from ._weighted import CLEAR_DIFFERENCE, Reward

DIMENSIONS = (
    "helpfulness",
    "coherence",
    "compliance",
    "salience",
    "detectability",
    "brand_voice",
    "persona",
    "reward_model",
)
FEATURES = (
    *(f"diff:{d}" for d in DIMENSIONS),
    *(f"sure_diff:{d}" for d in DIMENSIONS),
    "reward_diff",
    "veto",
    "agreement",
    "reward_diff_x_confidence",
    "reward_diff_x_conflict",
)
"""Each feature changes sign when A and B swap: the model has no intercept to learn a side."""

CALIBRATORS = ("temperature", "platt", "isotonic")
MIN_AUTO = 20


def min_auto(n: int) -> int:
    """The fewest calibration pairs a threshold may decide: 20, or a fifth of the split. The
    fixed sequence of tests starts there (a choice that depends only on n, so the guarantee
    holds); starting on fewer lets one early disagreement among the most confident end it."""
    return max(MIN_AUTO, n // 5)


TARGETS = (0.7, 0.8, 0.9)


def pair_features(a: Reward, b: Reward, weights: Mapping[str, float]) -> np.ndarray:
    """The features of "A over B" for two candidates' rewards under the profile's weights."""
    values: dict[str, float] = {}
    prefer_a = prefer_b = weight_sum = 0.0
    confidences: list[float] = []
    for dim in DIMENSIONS:
        sa, sb = a.vector.get(dim), b.vector.get(dim)
        if sa is None or sb is None:
            values[f"diff:{dim}"] = values[f"sure_diff:{dim}"] = 0.0
            continue
        diff = sa - sb
        ca, cb = a.confidence.get(dim) or 0.0, b.confidence.get(dim) or 0.0
        values[f"diff:{dim}"] = diff
        values[f"sure_diff:{dim}"] = diff * min(ca, cb)
        weight = weights.get(dim, 0.0)
        if weight > 0:
            weight_sum += weight
            confidences += [ca, cb]
            prefer_a += weight * (diff > CLEAR_DIFFERENCE)
            prefer_b += weight * (diff < -CLEAR_DIFFERENCE)
    total_a = 0.0 if a.vetoed else (a.total or 0.0)
    total_b = 0.0 if b.vetoed else (b.total or 0.0)
    reward_diff = total_a - total_b
    share_a = prefer_a / weight_sum if weight_sum else 0.0
    share_b = prefer_b / weight_sum if weight_sum else 0.0
    values["reward_diff"] = reward_diff
    values["veto"] = float(b.vetoed) - float(a.vetoed)
    values["agreement"] = share_a - share_b
    values["reward_diff_x_confidence"] = reward_diff * (
        sum(confidences) / len(confidences) if confidences else 0.0
    )
    values["reward_diff_x_conflict"] = reward_diff * min(share_a, share_b)
    return np.array([values[name] for name in FEATURES], dtype=float)


@dataclass(frozen=True)
class Example:
    """One labelled pair: the features of A over B and whether people preferred A."""

    key: str  # "<a generation id>|<b generation id>"
    group: str  # the prompt: pairs of one prompt stay on one side of every split
    x: np.ndarray
    y: int  # 1: the people's majority preferred A
    length_diff: int = 0  # len(A) - len(B) in characters: the trivial baseline
    task_type: str = "general"
    brand: str | None = None
    source: str = "import"
    at: str = ""  # when people decided (ISO 8601)


@dataclass(frozen=True)
class RewardModel:
    """A fitted, calibrated aggregator; ``as_dict``/``from_dict`` round-trip it as JSON."""

    coef: tuple[float, ...]  # on the scaled features
    scale: tuple[float, ...]
    calibrator: cs.Calibrator
    features: tuple[str, ...] = FEATURES
    C: float = 1.0

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(x) / np.array(self.scale)) @ np.array(self.coef)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(people prefer A) for each row of features."""
        return self.calibrator.apply(self.logits(x))

    def prefer(self, a: Reward, b: Reward, weights: Mapping[str, float]) -> float:
        return float(self.predict(pair_features(a, b, weights))[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "antisymmetric-logistic",
            "features": list(self.features),
            "coef": [round(c, 8) for c in self.coef],
            "scale": [round(s, 8) for s in self.scale],
            "C": self.C,
            "calibrator": self.calibrator.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RewardModel:
        """A model fitted before a feature existed (the reward-model critic's) reads it with
        weight 0: its predictions are what they were. A feature it has that is gone is an
        error."""
        stored = dict(zip(data["features"], zip(data["coef"], data["scale"], strict=True),
                          strict=True))
        unknown = sorted(set(stored) - set(FEATURES))
        if unknown:
            raise ValueError(
                f"the reward model was fitted on features this version lacks ({unknown[0]}): "
                "fit it again"
            )
        coef = tuple(stored.get(f, (0.0, 1.0))[0] for f in FEATURES)
        scale = tuple(stored.get(f, (0.0, 1.0))[1] for f in FEATURES)
        return cls(
            coef=coef,
            scale=scale,
            calibrator=cs.Calibrator.from_dict(data["calibrator"]),
            features=FEATURES,
            C=data.get("C", 1.0),
        )


@dataclass
class Fit:
    """What ``fit_reward_model`` produced: the model, its escalation threshold and the report."""

    model: RewardModel
    threshold: cs.Threshold
    report: dict[str, Any]
    held_out: dict[str, np.ndarray] = field(default_factory=dict)  # p, y, index of the split


def _augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both orders of every pair, half weight each: the fit cannot favour a position."""
    xs = np.vstack([x, -x])
    ys = np.concatenate([y, 1 - y])
    return xs, ys, np.full(len(ys), 0.5)


def _fit_logistic(x: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    xs, ys, w = _augment(x, y)
    scale = np.sqrt((xs**2).mean(axis=0))
    scale[scale < 1e-9] = 1.0  # a feature that never varies (a critic that never ran)
    model = LogisticRegression(fit_intercept=False, C=C, max_iter=2000)
    model.fit(xs / scale, ys, sample_weight=w)
    return model.coef_[0], scale


def _folds(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold of each example, whole groups at a time, stable for a seed."""
    order = sorted(set(groups), key=lambda g: _stable_hash(f"{seed}:{g}"))
    fold_of = {g: i % k for i, g in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(cs.accuracy(p, y), 4),
        "log_loss": round(cs.log_loss(p, y), 4),
        "brier": round(cs.brier(p, y), 4),
        "ece": round(cs.ece(p, y), 4),
    }


def _sign_accuracy(values: np.ndarray, y: np.ndarray) -> float:
    """Agreement of "the larger value wins" with people; equal values count half."""
    if len(y) == 0:
        return float("nan")
    p = np.where(values > 0, 1.0, np.where(values < 0, 0.0, 0.5))
    return round(float(np.mean(np.where(p == 0.5, 0.5, (p == y).astype(float)))), 4)


def confidence_and_correct(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The automatic decision's confidence, and whether it agrees with people."""
    confidence = np.maximum(p, 1 - p)
    correct = ((p >= 0.5) == (y == 1)).astype(int)
    return confidence, correct


def fit_reward_model(
    examples: Sequence[Example],
    *,
    target: float,
    risk: float,
    calibration_share: float = 0.3,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
) -> Fit:
    """Fit on part of ``examples``, choose the calibrator by cross-validation there, and pick
    the escalation threshold on the calibration split it never saw."""
    groups = [e.group for e in examples]
    split = _folds(groups, max(2, round(1 / calibration_share)), seed + 1) == 0
    fit_idx, cal_idx = np.flatnonzero(~split), np.flatnonzero(split)
    x = np.array([e.x for e in examples])
    y = np.array([e.y for e in examples])
    lengths = np.array([e.length_diff for e in examples])
    rewards = x[:, FEATURES.index("reward_diff")]
    xf, yf = x[fit_idx], y[fit_idx]

    # Out-of-fold logits on the fit split: what the calibrator learns from and CV reports on.
    fold = _folds([groups[i] for i in fit_idx], folds, seed)
    oof = np.zeros(len(fit_idx))
    for k in range(folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        coef, scale = _fit_logistic(xf[~test], yf[~test], C)
        oof[test] = (xf[test] / scale) @ coef
    z_aug = np.concatenate([oof, -oof])
    y_aug = np.concatenate([yf, 1 - yf])
    # Both orders of a pair (and every pair of a prompt) stay in one fold: a mirrored row on
    # the other side would tell the calibrator the held-out answer.
    prompt_of = np.array([groups[i] for i in fit_idx] * 2)
    chosen, losses = cs.choose_calibrator(
        z_aug, y_aug, groups=prompt_of, kinds=CALIBRATORS, folds=folds, seed=seed
    )
    # Cross-validated metrics of the calibrated model: calibrators fitted on the other folds.
    cv_p = np.zeros(len(fit_idx))
    for k in range(folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        zt, yt = oof[~test], yf[~test]
        cal = cs.fit_calibrator(chosen, np.concatenate([zt, -zt]), np.concatenate([yt, 1 - yt]))
        cv_p[test] = cal.apply(oof[test])
    calibrator = cs.fit_calibrator(chosen, z_aug, y_aug)
    coef, scale = _fit_logistic(xf, yf, C)
    model = RewardModel(tuple(coef), tuple(scale), calibrator, C=C)

    p_cal = model.predict(x[cal_idx]) if len(cal_idx) else np.zeros(0)
    conf, correct = confidence_and_correct(p_cal, y[cal_idx])
    threshold = cs.select_threshold(
        conf, correct, target=target, risk=risk, min_auto=min_auto(len(conf))
    )
    report: dict[str, Any] = {
        "examples": _describe(examples),
        "split": {
            "fit": int(len(fit_idx)),
            "calibration": int(len(cal_idx)),
            "folds": folds,
            "seed": seed,
            "by": "prompt (pairs of one prompt never straddle a split)",
        },
        "cross_validated": {
            "model": _metrics(cv_p, yf),
            "uncalibrated": _metrics(1 / (1 + np.exp(-oof)), yf),
            "profile_reward": {"accuracy": _sign_accuracy(rewards[fit_idx], yf)},
            "length": {"accuracy": _sign_accuracy(lengths[fit_idx], yf)},
            "calibrator_log_loss": {k: round(v, 4) for k, v in losses.items()},
            "calibrator": chosen,
        },
        "held_out": _held_out(p_cal, y[cal_idx], rewards[cal_idx], lengths[cal_idx]),
        "policy": threshold.as_dict(),
        "escalation": cs.escalation_curve(conf, correct, seed=seed) if len(conf) else [],
        "weights": {name: round(float(c), 4) for name, c in zip(FEATURES, coef, strict=True)},
    }
    return Fit(model, threshold, report, {"p": p_cal, "y": y[cal_idx], "index": cal_idx})


def _held_out(
    p: np.ndarray, y: np.ndarray, rewards: np.ndarray, lengths: np.ndarray
) -> dict[str, Any]:
    if len(y) == 0:
        return {"n": 0}
    conf, correct = confidence_and_correct(p, y)
    return {
        "n": int(len(y)),
        "model": _metrics(p, y),
        "profile_reward": {"accuracy": _sign_accuracy(rewards, y)},
        "length": {"accuracy": _sign_accuracy(lengths, y)},
        "coverage_at": [cs.coverage_at(conf, correct, t) for t in TARGETS],
        "reliability": cs.reliability(p, y),
    }


def evaluate_model(
    model: RewardModel,
    examples: Sequence[Example],
    *,
    threshold: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The model on labelled pairs it never saw: metrics, baselines, coverage at each target,
    uncertainty against random escalation, and (given ``threshold``) what the policy did."""
    x = np.array([e.x for e in examples])
    y = np.array([e.y for e in examples])
    p = model.predict(x)
    rewards = x[:, FEATURES.index("reward_diff")]
    lengths = np.array([e.length_diff for e in examples])
    out = _held_out(p, y, rewards, lengths)
    conf, correct = confidence_and_correct(p, y)
    out["escalation"] = cs.escalation_curve(conf, correct, seed=seed)
    if threshold is not None:
        auto = conf >= threshold
        out["policy"] = {
            "threshold": threshold,
            "coverage": round(float(auto.mean()), 4),
            "agreement": round(float(correct[auto].mean()), 4) if auto.any() else None,
        }
    return out


def _describe(examples: Sequence[Example]) -> dict[str, Any]:
    return {
        "pairs": len(examples),
        "people_prefer_a": int(sum(e.y for e in examples)),
        "by_source": dict(Counter(e.source for e in examples)),
        "by_task_type": dict(Counter(e.task_type for e in examples)),
        "prompts": len({e.group for e in examples}),
    }
