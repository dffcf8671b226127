"""Multi-dimensional rewards: critic scores -> one weighted reward, with the vector kept.

The reward of a candidate is the weighted mean of the critics that scored it (critics that
could not judge drop out of the mean and are listed as unscored); a hard violation (veto) sets
it to 0 whatever the rest says. Pure functions over plain data: no models, no store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

CLEAR_DIFFERENCE = 0.1
"""A dimension "clearly prefers" one candidate when their scores differ by more than this."""


@dataclass(frozen=True)
class Reward:
    candidate_id: str
    total: float | None  # None when no weighted critic could score it
    vector: dict[str, float | None]  # critic -> score (None: unscored)
    confidence: dict[str, float | None]
    vetoes: tuple[str, ...] = ()  # the rules broken
    unscored: tuple[str, ...] = ()

    @property
    def vetoed(self) -> bool:
        return bool(self.vetoes)

    @property
    def usable(self) -> bool:
        return self.total is not None and not self.vetoed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reward:
        return cls(
            candidate_id=data["candidate_id"],
            total=data["total"],
            vector=dict(data["vector"]),
            confidence=dict(data["confidence"]),
            vetoes=tuple(data.get("vetoes", ())),
            unscored=tuple(data.get("unscored", ())),
        )


def aggregate(
    candidate_id: str, scores: Mapping[str, Mapping[str, Any]], weights: Mapping[str, float]
) -> Reward:
    """Combine one candidate's critic scores (critic name -> Score.as_dict()) into a Reward."""
    vector: dict[str, float | None] = {}
    confidence: dict[str, float | None] = {}
    vetoes: list[str] = []
    unscored: list[str] = []
    weighted, weight_sum = 0.0, 0.0
    for name, weight in weights.items():
        if weight <= 0 or name not in scores:
            continue
        score = scores[name]
        vector[name] = score["score"]
        confidence[name] = score["confidence"]
        if score.get("veto"):
            rules = [v.get("rule", name) for v in score.get("evidence", {}).get("violations", [])]
            vetoes.extend(rules or [name])
        if score["score"] is None:
            unscored.append(name)
            continue
        weighted += weight * score["score"]
        weight_sum += weight
    total = None if weight_sum == 0 else weighted / weight_sum
    if vetoes and total is not None:
        total = 0.0
    return Reward(
        candidate_id=candidate_id,
        total=None if total is None else round(total, 6),
        vector=vector,
        confidence=confidence,
        vetoes=tuple(dict.fromkeys(vetoes)),
        unscored=tuple(unscored),
    )


@dataclass(frozen=True)
class Comparison:
    """How candidate ``a`` compares with ``b``."""

    margin: float  # a.total - b.total (a vetoed candidate counts as 0)
    pareto: bool  # a is at least as good on every dimension both scored, better on one
    disagreement: float  # weighted share of dimensions that clearly prefer b


def compare(a: Reward, b: Reward, weights: Mapping[str, float]) -> Comparison:
    total_a = 0.0 if a.vetoed else (a.total or 0.0)
    total_b = 0.0 if b.vetoed else (b.total or 0.0)
    shared = [
        name
        for name in weights
        if weights[name] > 0 and a.vector.get(name) is not None and b.vector.get(name) is not None
    ]
    diffs = {name: a.vector[name] - b.vector[name] for name in shared}
    pareto = (
        bool(diffs) and all(d >= 0 for d in diffs.values()) and any(d > 0 for d in diffs.values())
    )
    pareto = pareto and not a.vetoed
    weight = sum(weights[n] for n in shared)
    against = sum(weights[n] for n, d in diffs.items() if d < -CLEAR_DIFFERENCE)
    if b.vetoed and not a.vetoed:
        against = 0.0  # a veto outranks every other dimension: nothing to disagree about
    return Comparison(
        margin=round(total_a - total_b, 6),
        pareto=pareto,
        disagreement=round(against / weight, 6) if weight else 0.0,
    )
