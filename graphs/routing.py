"""Routing: what the feedback graph does with a prompt once its candidates are judged.

Pure functions of rewards and thresholds, unit-tested without a model:

- ``pair``: the best candidate passes compliance and beats the worst by the margin (or is at
  least as good on every dimension): a synthetic preference pair;
- ``escalate``: the judgement is uncertain (low critic confidence, unscored critics, a small
  margin, critics that disagree, a comparison that flips when the order is swapped): a person
  decides;
- ``revise``: no candidate is good enough: rewrite the best with the critics' rationales, then
  judge again; the revision becomes ``chosen`` only if it scores higher;
- ``drop``: nothing to learn from; the reason is recorded;
- ``defer``: the critics could not judge (an unreachable judge, say): no decision is recorded,
  and the next run judges the prompt again. Missing scores are never read as a bad answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..reward import Comparison, Reward, Routing, compare, load_model

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)

Route = Literal["pair", "escalate", "revise", "drop", "defer"]
Comparator = Callable[[Reward, Reward, Mapping[str, float]], Comparison]


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str
    chosen: str | None = None
    rejected: str | None = None
    margin: float | None = None
    uncertainty: float = 0.0  # 0..1: how unsure the critics are; ranks escalations
    source: Literal["synthetic", "revision"] | None = None
    reward_model: str | None = None  # the calibrated policy that decided, if one did
    p_chosen: float | None = None  # its P(people prefer chosen over rejected)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    rewards: Sequence[Reward],
    weights: Mapping[str, float],
    routing: Routing,
    *,
    revisions: int = 0,
    revision: tuple[str, str] | None = None,
    comparator: Comparator = compare,
) -> Decision:
    """Decide for one prompt. ``revision`` is (revised candidate, the candidate it rewrote)
    when the last step was a revision."""
    by_id = {r.candidate_id: r for r in rewards}
    if revision is not None:
        return _judge_revision(by_id[revision[0]], by_id[revision[1]], revisions, routing)

    usable = sorted((r for r in rewards if r.usable), key=lambda r: r.total, reverse=True)
    best = usable[0] if usable else None
    unjudged = [r for r in rewards if r.total is None and not r.vetoed]
    if best is None and unjudged:  # not a bad answer: one nobody could score
        return _defer("no candidate could be judged", unjudged)
    if best is None or best.total < routing.good_enough:
        why = (
            "no candidate passed compliance and scored"
            if best is None
            else f"best reward {best.total:.3f} is below good_enough {routing.good_enough}"
        )
        target = best or _least_bad(rewards)
        if target is not None and revisions < routing.max_revisions:
            return Decision("revise", why, chosen=target.candidate_id, uncertainty=0.0)
        return Decision("drop", why + (" and revisions are used up" if target else ""))
    if len(rewards) < 2:
        return Decision("drop", "only one candidate: nothing to compare it with")

    worst = min(
        (r for r in rewards if r.candidate_id != best.candidate_id),
        key=lambda r: -1.0 if r.vetoed else (r.total if r.total is not None else 2.0),
    )
    forward = comparator(best, worst, weights)
    backward = comparator(worst, best, weights)
    reasons, parts = [], [0.0]
    low = [
        (name, c)
        for reward in (best, worst)
        for name, c in reward.confidence.items()
        if c is not None and weights.get(name, 0) > 0 and c < routing.min_confidence
    ]
    if low:
        name, c = min(low, key=lambda item: item[1])
        reasons.append(f"low confidence ({name} {c:.2f} < {routing.min_confidence})")
        parts.append(1 - c / routing.min_confidence if routing.min_confidence else 0.0)
    unscored = sorted(set(best.unscored) | set(worst.unscored))
    if unscored:
        reasons.append(f"unscored: {', '.join(unscored)}")
        parts.append(len(unscored) / max(1, len([w for w in weights.values() if w > 0])))
    if forward.margin < routing.pair_margin and not forward.pareto:
        reasons.append(f"small margin ({forward.margin:.3f} < {routing.pair_margin})")
        parts.append(1 - max(forward.margin, 0) / routing.pair_margin if routing.pair_margin else 0)
    if forward.disagreement > routing.max_disagreement:
        reasons.append(
            f"critics disagree ({forward.disagreement:.2f} of the weight prefers the other)"
        )
        parts.append(forward.disagreement)
    if (forward.margin > 0) == (backward.margin > 0) and forward.margin != 0:
        reasons.append("the preference flips when the order is swapped")
        parts.append(1.0)
    uncertainty = round(min(1.0, max(parts)), 4)
    common = {
        "chosen": best.candidate_id,
        "rejected": worst.candidate_id,
        "margin": forward.margin,
        "uncertainty": uncertainty,
    }
    if reasons:
        return Decision("escalate", "; ".join(reasons), **common)
    basis = "dominates on every dimension" if forward.pareto else "beats it"
    vetoed = f" (rejected is vetoed: {', '.join(worst.vetoes)})" if worst.vetoed else ""
    reason = f"chosen {basis} by {forward.margin:.3f}{vetoed}"
    return Decision("pair", reason, source="synthetic", **common)


@dataclass(frozen=True)
class CalibratedPolicy:
    """Escalation by a calibrated reward model (``criticloop calibrate``): decide a pair
    without a person only when the model's confidence clears the threshold chosen for its
    target agreement and risk."""

    version: str
    model: Any  # aggregator.RewardModel
    threshold: float
    target: float
    risk: float
    task_types: frozenset[str]
    critic_versions: Mapping[str, str]

    def applies(self, task_type: str, versions: Mapping[str, str], weights: Mapping[str, float]):
        """Why this model cannot judge the prompt, or None when it can."""
        if task_type not in self.task_types:
            return f"{self.version} learned from no {task_type} pairs"
        for name, weight in weights.items():
            if weight > 0 and versions.get(name) != self.critic_versions.get(name):
                return (
                    f"{self.version} learned from {name} {self.critic_versions.get(name)}, "
                    f"which now runs as {versions.get(name)}"
                )
        return None

    def decide(
        self, base: Decision, rewards: Sequence[Reward], weights: Mapping[str, float]
    ) -> Decision:
        """Re-decide a pair-or-escalate decision of the profile's rules by the model."""
        by_id = {r.candidate_id: r for r in rewards}
        a, b = by_id[base.chosen], by_id[base.rejected]
        p = self.model.prefer(a, b, weights)
        winner, loser = (a, b) if p >= 0.5 else (b, a)
        confidence = max(p, 1 - p)
        common = {
            "chosen": winner.candidate_id,
            "rejected": loser.candidate_id,
            "margin": round((winner.total or 0.0) - (loser.total or 0.0), 6),
            "uncertainty": round(1 - 2 * (confidence - 0.5), 4),
            "reward_model": self.version,
            "p_chosen": round(confidence, 4),
        }
        policy = f"{self.version}: {self.target:.0%} agreement at risk {self.risk:g}"
        unscored = sorted(set(a.unscored) | set(b.unscored))
        if unscored:
            return Decision("escalate", f"unscored: {', '.join(unscored)}", **common)
        if winner.vetoed:
            why = f"{self.version} prefers a vetoed candidate ({', '.join(winner.vetoes)})"
            return Decision("escalate", why, **common)
        if confidence >= self.threshold:
            why = f"calibrated confidence {confidence:.3f} >= {self.threshold:.3f} ({policy})"
            return Decision("pair", why, source="synthetic", **common)
        why = f"calibrated confidence {confidence:.3f} < {self.threshold:.3f} ({policy})"
        return Decision("escalate", why, **common)


def active_policy(store: Store) -> CalibratedPolicy | None:
    """The escalation policy of the active reward model, or None (the profile decides)."""
    row = store.active_reward_model()
    if row is None or row["policy"].get("threshold") is None:
        return None
    try:
        model = load_model(row)
    except (KeyError, ValueError) as exc:
        log.warning("reward model %s cannot be used (%s): the profile decides", row["version"], exc)
        return None
    return CalibratedPolicy(
        version=row["version"],
        model=model,
        threshold=row["policy"]["threshold"],
        target=row["policy"]["target"],
        risk=row["policy"]["risk"],
        task_types=frozenset(row["report"].get("task_types", {})),
        critic_versions=row["critic_versions"],
    )


def _defer(what: str, rewards: Sequence[Reward]) -> Decision:
    critics = sorted({name for r in rewards for name in r.unscored})
    return Decision("defer", f"{what} (unscored: {', '.join(critics) or 'every critic'})")


def _judge_revision(
    revised: Reward, original: Reward, revisions: int, routing: Routing
) -> Decision:
    if revised.total is None and not revised.vetoed:
        return _defer("the revision could not be judged", [revised])
    before = original.total if original.usable else 0.0
    if revised.usable and revised.total > before:
        return Decision(
            "pair",
            f"revision scores {revised.total:.3f} over the original's {before:.3f}",
            chosen=revised.candidate_id,
            rejected=original.candidate_id,
            margin=round(revised.total - before, 6),
            source="revision",
        )
    now = "vetoed" if revised.vetoed else f"{(revised.total or 0):.3f}"
    why = f"revision did not score higher ({now} vs {before:.3f})"
    if revisions < routing.max_revisions:  # sample another rewrite of the same original
        return Decision("revise", why + "; revising again", chosen=original.candidate_id)
    return Decision("drop", why)


def _least_bad(rewards: Sequence[Reward]) -> Reward | None:
    """The candidate a revision should start from when none is usable: the highest scored."""
    scored = [r for r in rewards if r.vector]
    if not scored:
        return None
    return max(scored, key=lambda r: sum(v or 0 for v in r.vector.values()))


def route_after_judging(state: Mapping[str, Any]) -> Route:
    """Conditional edge after ``aggregate``: the route of the decision just made."""
    return state["decision"]["route"]
