"""What jobs record: one frozen dataclass per row kind, each with its natural key (a rerun
updates or skips the same row instead of adding another), and the summary of an import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ._common import _key

Outcome = Literal["inserted", "updated", "unchanged"]


@dataclass(frozen=True)
class GenerationRecord:
    """One candidate response, as a generation job produced it."""

    prompt_id: str
    config_hash: str
    candidate_index: int
    text: str
    model: str
    sampling: dict[str, Any]
    adapter_version: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    run_id: str | None = None

    @property
    def id(self) -> str:
        return "g-" + _key(self.prompt_id, self.config_hash, self.candidate_index)


@dataclass(frozen=True)
class CritiqueRecord:
    """One critic's judgement of one generation in one run; ``score is None`` means unscored.
    A run that is resumed records each judgement once; another run judging the same text
    records its own."""

    generation_id: str
    critic: str
    score: float | None
    confidence: float | None
    rationale: str
    critic_version: str
    backend: str
    evidence: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    @classmethod
    def of(
        cls, generation_id: str, critic: str, score: Any, backend: str, run_id: str | None
    ) -> CritiqueRecord:
        """The record of a critic's ``Score`` (its dimension and veto kept in the evidence)."""
        return cls(
            generation_id=generation_id,
            critic=critic,
            score=score.score,
            confidence=score.confidence,
            rationale=score.rationale,
            critic_version=score.critic_version,
            backend=backend,
            evidence={**score.evidence, "dimension": score.dimension, "veto": score.veto},
            run_id=run_id,
        )

    @property
    def id(self) -> str:
        key = (self.generation_id, self.critic, self.critic_version, self.backend, self.run_id)
        return "c-" + _key(*key)


@dataclass(frozen=True)
class PairRecord:
    """A preference pair: ``chosen`` preferred over ``rejected`` for the prompt."""

    prompt_id: str
    chosen: str
    rejected: str
    source: str
    margin: float | None = None
    chosen_generation_id: str | None = None
    rejected_generation_id: str | None = None
    run_id: str | None = None

    @property
    def id(self) -> str:
        return "pr-" + _key(self.prompt_id, self.chosen, self.rejected, self.source)


@dataclass(frozen=True)
class ReviewRecord:
    """A person's decision. A reviewer who decides again on the same thing updates it."""

    prompt_id: str
    reviewer: str
    kind: str
    generation_id: str | None = None
    other_generation_id: str | None = None
    preference: str | None = None
    stars: int | None = None
    thumbs: str | None = None
    comment: str | None = None
    rewrite: str | None = None
    decision_id: str | None = None  # the escalated case it was given on, if any
    source: str = "reviewer"  # or "import": a labelled pair from a file; "log": a feedback log
    dataset: str | None = None  # the imported file's dataset name
    dimension: str = ""  # what a label judges: a critic's name, '' the overall preference
    label: str | None = None  # a logged rating's raw category label (UR2), mapped to thumbs
    logged_at: str | None = None  # when the user gave a logged rating, as the log says

    @property
    def id(self) -> str:
        key: tuple[str | None, ...] = (
            self.reviewer,
            self.kind,
            self.prompt_id,
            self.generation_id,
            self.other_generation_id,
        )
        if self.dimension:  # overall reviews keep the ids they had before dimensions
            key += (self.dimension,)
        return "rv-" + _key(*key)


@dataclass(frozen=True)
class DecisionRecord:
    """What the feedback graph decided for one prompt in one run (updated as it moves on)."""

    run_id: str
    prompt_id: str
    config_hash: str
    outcome: str  # see vocab.OUTCOMES
    status: str  # waiting (for a person) or done
    reason: str
    rewards: dict[str, Any]
    uncertainty: float | None = None
    margin: float | None = None
    chosen_generation_id: str | None = None
    rejected_generation_id: str | None = None
    pair_id: str | None = None
    reward_model: str | None = None  # the calibrated policy that routed it, if any

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.prompt_id}"


@dataclass
class ImportSummary:
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, outcome: Outcome) -> None:
        bucket = getattr(self, outcome)
        bucket[kind] = bucket.get(kind, 0) + 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged}
