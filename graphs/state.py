"""Typed state of the feedback graph, one thread per (run, prompt).

Everything here is plain JSON-able data so the SQLite checkpointer can persist it between
steps (and across processes, for human review). Reducers say how parallel writes combine:

- ``candidates``: appended, one entry per candidate id (a re-run node adds nothing twice);
- ``scores``: merged per candidate and critic, so the critics fanned out in parallel each add
  their own column without overwriting the others;
- every other key: the last write wins.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict


class CandidateState(TypedDict):
    id: str  # the generation's id in the store
    text: str
    source: str  # policy | supplied | revision
    finish_reason: str | None
    revises: str | None  # for a revision: the id of the candidate it rewrote


def merge_candidates(
    left: list[CandidateState] | None, right: list[CandidateState] | None
) -> list[CandidateState]:
    """Append new candidates, ignoring ids already present (order kept)."""
    merged = list(left or [])
    seen = {c["id"] for c in merged}
    for candidate in right or []:
        if candidate["id"] not in seen:
            merged.append(candidate)
            seen.add(candidate["id"])
    return merged


def merge_scores(
    left: dict[str, dict[str, Any]] | None, right: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """{candidate id: {critic: Score dict}}: merge per candidate, later critic results win."""
    merged = {cid: dict(by_critic) for cid, by_critic in (left or {}).items()}
    for cid, by_critic in (right or {}).items():
        merged.setdefault(cid, {}).update(by_critic)
    return merged


class FeedbackState(TypedDict, total=False):
    run_id: str
    prompt_id: str
    candidates: Annotated[list[CandidateState], merge_candidates]
    scores: Annotated[dict[str, dict[str, Any]], merge_scores]
    rewards: dict[str, dict[str, Any]]  # candidate id -> Reward.as_dict()
    decision: dict[str, Any]  # the latest Decision.as_dict()
    revisions: int  # critique-and-revise rounds done
    pending_revision: list[str] | None  # [revised id, original id] until it is judged
    critics_due: list[str]  # the critics with candidates to judge, from prepare
    outcome: dict[str, Any]  # the final word: outcome, reason, pair id
