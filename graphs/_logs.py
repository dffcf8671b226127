"""The revise step of production feedback logs: answers users rated down, rewritten and judged.

    criticloop feedback revise [--revise feedback|alternative] [--limit N] [--json]

Every answer from a feedback log (``criticloop feedback import``) that users rated down (a thumb
down, or ``NEGATIVE_STARS`` stars or fewer) and that has no finished revision in this mode yet is
rewritten by the teacher when one writes revisions (``CRITICLOOP_TEACHER__*``), else by the
policy, with the feedback graph's machinery (:func:`build_revision`, the writer of
:class:`FeedbackResources`, :func:`generate_and_record`):

``feedback``
    the rated answer and the users' comments go into the revision request (the critics'
    rationales' place in the graph's revise step);
``alternative``
    a fresh answer to the conversation, as the policy answers any prompt: neither the answer nor
    the comments are shown.

The critics then judge the rewrite against the rated answer with the graph's own nodes
(``prepare``, one ``critic_<name>`` each, ``aggregate`` with the rewrite as a pending revision
that has used up its rounds). A rewrite that scores higher becomes a pair with source
``log-revision`` (chosen: the rewrite, stored as a generation of the log prompt; rejected: the
rated answer); one that does not is ``dropped`` with the reason, in ``log_revisions``, where
``feedback revise --json`` and the store show it. A rewrite no critic could score is
``unjudged`` and is judged again by the next run.

Natural keys throughout: the rewrite is a generation keyed by the rated answer and the mode, the
row of ``log_revisions`` is keyed the same way, and the pair by its texts; so a run killed at any
point loses nothing it recorded, and running again revises nothing twice. ``criticloop graph
run`` runs this step after judging (``CRITICLOOP_FEEDBACK__REVISE_NIGHTLY``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..agents import Critic, Sampling, build_conversation, build_revision, policy_ref
from ..reward import Profiles
from ..settings import Settings
from ..store import REVISE_MODES, PairRecord, Store
from ._generate import generate_and_record

if TYPE_CHECKING:  # the graph's modules (LangGraph) load when there is something to revise
    from .feedback import FeedbackResources

log = logging.getLogger(__name__)
RUN_KIND = "log-revision"
ENOUGH_ROUNDS = 1_000_000
"""Revision rounds a log rewrite counts as having used: routing then drops a rewrite that does
not score higher, instead of asking for another."""


def log_revision_pending(settings: Settings, mode: str | None = None) -> int:
    """How many rated-down log answers wait for a revision in ``mode`` (default: settings')."""
    if not settings.db_path.exists():
        return 0
    with Store.open(settings.db_path, create=False) as store:
        return len(store.log_turns_to_revise(mode or settings.feedback.revise))


def run_log_revision(
    settings: Settings,
    *,
    mode: str | None = None,
    limit: int | None = None,
    sampling: Sampling | None = None,
    resources: FeedbackResources | None = None,
    critics: dict[str, Critic] | None = None,
    load_policy: Any = None,
    load_embedder_fn: Any = None,
    load_teacher: Any = None,
) -> dict[str, Any]:
    """Revise the rated-down log answers not revised yet in ``mode``; return what it made:
    ``pairs`` (log-revision pairs made), ``not_made`` (reason -> count), ``unjudged``.

    ``resources``: a graph run's, to reuse its loaded models and critics; otherwise they are
    made as ``graph run`` makes them (``critics``, ``load_policy``... replace the real ones)."""
    mode = mode or settings.feedback.revise
    if mode not in REVISE_MODES:
        raise ValueError(f"revise mode must be one of {', '.join(REVISE_MODES)}, not {mode!r}")
    summary: dict[str, Any] = {
        "run_id": None,
        "mode": mode,
        "turns": 0,
        "pairs": 0,
        "not_made": {},
        "unjudged": 0,
        "failed": {},
        "revisions": [],
        "database": str(settings.db_path),
    }
    with Store.open(settings.db_path, create=False) as store:
        turns = store.log_turns_to_revise(mode, limit)
    summary["turns"] = len(turns)
    if not turns:
        return summary
    from .feedback import ThreadStores

    stores = ThreadStores(settings.db_path)
    if resources is not None:
        r = replace(resources, stores=stores, _contexts={})
    else:
        from ._resources import make_resources

        defaults = settings.generation
        r = make_resources(
            settings,
            stores,
            Profiles.load(settings.profiles),
            sampling
            or Sampling(
                defaults.max_new_tokens, defaults.temperature, defaults.top_p, defaults.seed
            ),
            1,
            critics=critics,
            load_policy=load_policy,
            load_embedder_fn=load_embedder_fn,
            load_teacher=load_teacher,
        )
    if sampling is not None:
        r.sampling = sampling
    store = stores.get()
    writer = (
        f"teacher:{settings.teacher.model}"
        if r.load_teacher is not None and r.teacher_role in ("revisions", "both")
        else policy_ref(settings, convert=False).name
    )
    run_id = store.start_run(
        RUN_KIND,
        {
            "mode": mode,
            "writer": writer,
            "sampling": r.sampling.as_dict(),
            "profile": r.profiles.version,
            "answers": [t["generation_id"] for t in turns],
        },
    )
    summary["run_id"] = run_id
    reasons: Counter[str] = Counter()
    status = "failed"
    try:
        for turn in turns:
            try:
                row = _revise_turn(r, store, run_id, turn, mode)
            except Exception as exc:  # noqa: BLE001 - one answer's failure is counted, not fatal
                from ._resources import _prompt_fault, _why

                if not _prompt_fault(exc):
                    raise
                log.warning("revising log answer %s failed: %s", turn["generation_id"], _why(exc))
                summary["failed"][turn["generation_id"]] = _why(exc)
                continue
            summary["revisions"].append(row)
            if row["outcome"] == "pair":
                summary["pairs"] += 1
            elif row["outcome"] == "unjudged":
                summary["unjudged"] += 1
            else:
                reasons[_reason_kind(row["reason"])] += 1
        status = "done"
    finally:
        summary["not_made"] = dict(reasons.most_common())
        store.finish_run(run_id, status, {k: v for k, v in summary.items() if k != "revisions"})
        stores.close()
    return summary


def _revise_turn(
    r: FeedbackResources, store: Store, run_id: str, turn: dict[str, Any], mode: str
) -> dict[str, Any]:
    """Rewrite one rated answer (or find its rewrite stored), judge it, record the outcome."""
    from langgraph.runtime import Runtime

    from .feedback import _candidate, judge, judge_all, prepare

    prompt_id, rated_id = turn["prompt_id"], turn["generation_id"]
    prompt, brand, campaign = r.context(prompt_id)
    # One rewrite per rated answer and mode (and writer and sampling): a rerun finds it stored.
    config = f"{r.revision_config()}-log-{mode}-{rated_id.removeprefix('g-')[:12]}"
    stored = [g for g in store.generations_for(prompt_id) if g["config_hash"] == config]
    if not stored:
        if mode == "feedback":
            said = [f"The user rated this answer down ({', '.join(turn['why'])})."]
            said += [f"The user said: {c}" for c in turn["comments"]]
            conversation = build_revision(prompt, turn["text"], said)
        else:
            conversation = build_conversation(prompt, brand, campaign)
        for _ in generate_and_record(
            store,
            r.writer("revisions"),
            [(prompt_id, conversation, [0])],
            sampling=r.sampling,
            config_hash=config,
            batch_size=1,
            run_id=run_id,
        ):
            pass
        stored = [g for g in store.generations_for(prompt_id) if g["config_hash"] == config]
    rewrite = _candidate(stored[0], "revision", revises=rated_id)
    rated = _candidate(store.db["generations"].get(rated_id), "log")
    common = {
        "prompt_id": prompt_id,
        "rated_generation_id": rated_id,
        "mode": mode,
        "rewrite_generation_id": rewrite["id"],
        "run_id": run_id,
    }
    if rewrite["text"].strip() == rated["text"].strip():
        reason = "the rewrite is the rated answer word for word"
        store.record_log_revision(**common, outcome="dropped", reason=reason)
        return {**common, "outcome": "dropped", "reason": reason, "pair_id": None}
    state: dict[str, Any] = {
        "run_id": run_id,
        "prompt_id": prompt_id,
        "candidates": [rated, rewrite],
        "revisions": ENOUGH_ROUNDS,
        "pending_revision": [rewrite["id"], rated_id],
        "scores": {},
    }
    runtime = Runtime(context=r)
    prepare(state, runtime)
    for name in r.critics:
        for candidate_id, scores in (judge(state, runtime, name=name).get("scores") or {}).items():
            state["scores"].setdefault(candidate_id, {}).update(scores)
    decided = judge_all(state, runtime)
    decision, rewards = decided["decision"], decided["rewards"]
    route, reason = decision["route"], decision["reason"]
    pair_id = None
    with store.transaction():  # the pair and its row land together
        if route == "pair" and decision["chosen"] == rewrite["id"]:
            record = PairRecord(
                prompt_id=prompt_id,
                chosen=rewrite["text"],
                rejected=rated["text"],
                source="log-revision",
                margin=decision["margin"],
                chosen_generation_id=rewrite["id"],
                rejected_generation_id=rated_id,
                run_id=run_id,
            )
            store.record_pair(record)
            outcome, pair_id = "pair", record.id
        elif route == "defer":
            outcome = "unjudged"
        else:
            outcome = "dropped"
        store.record_log_revision(
            **common,
            outcome=outcome,
            reason=reason,
            margin=decision.get("margin"),
            rewards=rewards,
            pair_id=pair_id,
        )
    return {**common, "outcome": outcome, "reason": reason, "pair_id": pair_id}


def _reason_kind(reason: str) -> str:
    """A dropped revision's reason without its numbers, to count them by kind."""
    if reason.startswith("revision did not score higher (vetoed"):
        return "the rewrite is vetoed"
    if reason.startswith("revision did not score higher"):
        return "the rewrite did not score higher"
    return reason
