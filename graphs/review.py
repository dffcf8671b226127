"""Deciding escalated cases: people's verdicts into the store, then the waiting graph threads on.

    criticloop review                       # the Textual app (tui/), built on ReviewDesk
    criticloop graph decide RUN PROMPT --prefer b --reviewer ana

A verdict is written to the store first, in one transaction with letting go of the case's lease,
so a crash right after the key press loses nothing. Then, once the case has the verdicts it needs
(``review.reviews_per_item``), its LangGraph thread resumes with ``Command(resume=...)`` and the
graph's escalate node makes the pairs (source ``human``, or ``human-revision`` for a rewrite). A
case whose verdicts are in but whose thread did not resume (the app was killed in between) is
settled the next time a desk opens. Undo withdraws the verdict; if the case had closed, its pairs
are deleted and its thread is forked back to the ``interrupt()`` (LangGraph time travel).
"""

from __future__ import annotations

import getpass
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from ..store import ALL_CASES, CaseFilter, Store
from .tracing import Tracer, post_feedback

log = logging.getLogger(__name__)

ESCALATING_NODE = "aggregate"
"""The node whose routing sends a case to ``escalate``: a rewound thread is forked as if it had
just run, so the routing sends it to ``escalate`` (and its ``interrupt()``) again."""


def reviewer_name(settings: Settings, override: str | None = None) -> str:
    """``--reviewer``, else the settings' reviewer, else the login name."""
    name = override or settings.review.reviewer
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = None
    name = (name or "").strip()
    if not name:
        raise ConfigError("no reviewer name: pass --reviewer or set CRITICLOOP_REVIEW__REVIEWER")
    return name


@dataclass(frozen=True)
class ReviewCandidate:
    """Candidate A or B of a :class:`ReviewCase`, with its reward and critiques."""

    label: str  # "A" (the critics' choice) or "B"
    id: str
    text: str
    finish_reason: str | None
    reward: dict[str, Any]
    critiques: list[dict[str, Any]]


@dataclass(frozen=True)
class ReviewCase:
    """An escalated case with everything a reviewer needs to decide it (not
    :class:`criticloop.agents.Case`, the response a critic judges)."""

    decision: dict[str, Any]
    prompt: dict[str, Any]
    brand: dict[str, Any] | None
    campaign: dict[str, Any] | None
    a: ReviewCandidate
    b: ReviewCandidate
    mine: list[dict[str, Any]] = field(default_factory=list)  # this reviewer's reviews
    verdicts_in: int = 0

    @property
    def id(self) -> str:
        return self.decision["id"]

    def candidate(self, label: str) -> ReviewCandidate:
        return self.a if label.upper() == "A" else self.b

    def annotation(self, kind: str, label: str) -> dict[str, Any] | None:
        gen = self.candidate(label).id
        return next((r for r in self.mine if r["kind"] == kind and r["generation_id"] == gen), None)

    def verdict(self) -> dict[str, Any] | None:
        return next((r for r in self.mine if r["kind"] in ("preference", "rewrite")), None)


class Resumer:
    """Resumes and rewinds escalated graph threads; one compiled graph per run (a run's
    sampling and generation config are part of its graph's resources). Not thread-safe: use
    from one thread."""

    def __init__(self, settings: Settings):
        from .feedback import ThreadStores  # LangGraph loads here, not when the app opens

        self.settings = settings
        self._stores = ThreadStores(settings.db_path)
        self._checkpointer = None
        self._graphs: dict[str, Any] = {}
        self._resources: dict[str, Any] = {}  # each run's, the context its graph runs with
        self._tracers: dict[str, Any] = {}
        self._profiles: Any = None

    def _graph(self, run_id: str) -> Any:
        from ..agents import Sampling
        from ..reward import Profiles
        from .feedback import build_feedback_graph
        from .run import make_resources, open_checkpointer, trace_metadata

        graph = self._graphs.get(run_id)
        if graph is None:
            run = self._stores.get().get_run(run_id)
            config = run["config"]
            self._profiles = self._profiles or Profiles.load(self.settings.profiles)
            resources = make_resources(
                self.settings,
                self._stores,
                self._profiles,
                Sampling(**config["sampling"]),
                config["candidates"],
            )
            resources.config_hash = config["config_hash"]
            if self._checkpointer is None:
                self._checkpointer = open_checkpointer(self.settings)
            graph = self._graphs[run_id] = build_feedback_graph(resources, self._checkpointer)
            self._resources[run_id] = resources
            self._tracers[run_id] = Tracer(self.settings, trace_metadata(run, resources))
        return graph

    def _invoke(self, run_id: str, prompt_id: str, value: Any, kind: str) -> Any:
        from .run import thread_config

        graph = self._graph(run_id)
        self._resources[run_id].ready_thread()
        return self._tracers[run_id].invoke(
            graph,
            value,
            thread_config(run_id, prompt_id),
            self._stores.get(),
            run_id=run_id,
            prompt_id=prompt_id,
            kind=kind,
            context=self._resources[run_id],
        )

    def resume(self, run_id: str, prompt_id: str, answer: dict[str, Any]) -> dict[str, Any]:
        """Hand the thread its answer; returns the thread's outcome."""
        from langgraph.types import Command

        from .run import thread_config, waiting_for_review

        graph = self._graph(run_id)
        config = thread_config(run_id, prompt_id)
        if not waiting_for_review(graph.get_state(config)):
            self.rewind(run_id, prompt_id)  # undone earlier, and the rewind did not finish
        result = self._invoke(run_id, prompt_id, Command(resume=answer), "resume")
        return result.get("outcome", {})

    def rewind(self, run_id: str, prompt_id: str) -> None:
        """Fork the thread back to its latest ``interrupt()``: it waits for an answer again."""
        from .run import thread_config, waiting_for_review

        graph = self._graph(run_id)
        config = thread_config(run_id, prompt_id)
        if waiting_for_review(graph.get_state(config)):
            return
        waiting = next((s for s in graph.get_state_history(config) if waiting_for_review(s)), None)
        if waiting is None:
            raise RuntimeError(f"thread {run_id}/{prompt_id} never waited for a person")
        graph.update_state(waiting.config, {}, as_node=ESCALATING_NODE)
        self._invoke(run_id, prompt_id, None, "rewind")  # escalate again, up to its interrupt()

    def close(self) -> None:
        for tracer in self._tracers.values():
            tracer.flush()
        self._tracers.clear()
        self._resources.clear()
        self._stores.close()
        if self._checkpointer is not None:
            self._checkpointer.conn.close()
            self._checkpointer = None
        self._graphs.clear()


class ReviewDesk:
    """One reviewer's session over the review queue: what the reviewer app and
    ``graph decide`` call. Store calls are quick and belong on the caller's thread; the graph
    calls (:meth:`settle`, :meth:`undo`) may take a second and belong on one worker thread."""

    def __init__(
        self,
        settings: Settings,
        reviewer: str,
        *,
        holder: str | None = None,
    ):
        self.settings = settings
        self.reviewer = reviewer
        self.reviews_per_item = settings.review.reviews_per_item
        self.lease_seconds = settings.review.lease_minutes * 60
        self.holder = (
            holder or f"{reviewer}@{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.store = Store.open(settings.db_path, create=False)
        self._resumer: Resumer | None = None

    # ---- store side: quick, on the caller's thread --------------------------------------------

    def next_case(
        self,
        filters: CaseFilter = ALL_CASES,
        exclude: Iterable[str] = (),
        only: str | None = None,
    ) -> ReviewCase | None:
        """Lease the next case this reviewer should decide, most uncertain first (or case
        ``only``, if it is open to this reviewer)."""
        row = self.store.claim_case(
            self.holder,
            self.reviewer,
            reviews_per_item=self.reviews_per_item,
            lease_seconds=self.lease_seconds,
            filters=filters,
            exclude=exclude,
            only=only,
        )
        return None if row is None else self.load_case(row)

    def queue(self, filters: CaseFilter = ALL_CASES) -> dict[str, int]:
        return self.store.queue_summary(
            self.holder, self.reviewer, reviews_per_item=self.reviews_per_item, filters=filters
        )

    def load_case(self, decision: dict[str, Any]) -> ReviewCase:
        store = self.store
        prompt, brand, campaign = store.prompt_context(decision["prompt_id"])

        def candidate(label: str, gen_id: str) -> ReviewCandidate:
            gen = store.get_generation(gen_id)
            critiques = store.critiques_for(gen_id)
            mine = [c for c in critiques if c["run_id"] == decision["run_id"]] or critiques
            return ReviewCandidate(
                label=label,
                id=gen_id,
                text=gen["text"],
                finish_reason=gen["finish_reason"],
                reward=(decision.get("rewards") or {}).get(gen_id, {}),
                critiques=mine,
            )

        case = ReviewCase(
            decision=decision,
            prompt=prompt,
            brand=brand,
            campaign=campaign,
            a=candidate("A", decision["chosen_generation_id"]),
            b=candidate("B", decision["rejected_generation_id"]),
        )
        return self.with_reviews(case)

    def with_reviews(self, case: ReviewCase) -> ReviewCase:
        """``case`` with this reviewer's reviews as they are now (after a rating, say)."""
        return replace(
            case,
            mine=self.store.case_reviews(case.id, self.reviewer),
            verdicts_in=len(self.store.verdicts(case.id)),
        )

    def verdict(
        self,
        case_id: str,
        preference: str,
        *,
        rewrite: str | None = None,
        comment: str | None = None,
    ) -> bool:
        """Record this reviewer's verdict; True when the case now has all the verdicts it needs
        (call :meth:`settle` to resume its thread)."""
        verdicts = self.store.record_verdict(
            case_id,
            self.reviewer,
            preference,
            rewrite=rewrite,
            comment=comment,
            holder=self.holder,
            reviews_per_item=self.reviews_per_item,
        )
        return len(verdicts) >= self.reviews_per_item  # one verdict per reviewer

    def annotate(self, case: ReviewCase, label: str, **annotation: Any) -> None:
        self.store.annotate(case.id, self.reviewer, case.candidate(label).id, **annotation)

    def renew_lease(self) -> None:
        self.store.renew_lease(self.holder, self.lease_seconds)

    def release(self) -> None:
        self.store.release_leases(self.holder)

    def stats(self) -> dict[str, Any]:
        from ..reward import calibration_stats

        return {
            **self.store.review_stats(),
            "calibration": calibration_stats(self.store, self.settings),
        }

    # ---- graph side: slower, on one worker thread ----------------------------------------------

    @property
    def resumer(self) -> Resumer:
        if self._resumer is None:
            self._resumer = Resumer(self.settings)
        return self._resumer

    def settle(self, case_id: str | None = None) -> list[dict[str, Any]]:
        """Resume the threads of cases that have all their verdicts (``case_id``'s, or every
        such case); return their outcomes."""
        with Store.open(self.settings.db_path, create=False) as store:  # this thread's own
            ready = store.cases_to_settle(self.reviews_per_item)
            ready = [d for d in ready if case_id is None or d["id"] == case_id]
            answers = [(d, answer_for_case(store, d)) for d in ready]
        outcomes = []
        for decision, answer in answers:
            outcome = self.resumer.resume(decision["run_id"], decision["prompt_id"], answer)
            outcomes.append({"case": decision["id"], **outcome})
        self.send_feedback()
        return outcomes

    def send_feedback(self) -> dict[str, int]:
        """Send people's decisions waiting in the outbox to LangSmith (when it is configured);
        a failure leaves them there for the next try and never stops a review."""
        try:
            with Store.open(self.settings.db_path, create=False) as store:
                return post_feedback(self.settings, store)
        except Exception:  # noqa: BLE001 - LangSmith is an observer, not part of the review
            log.warning("could not send review feedback to LangSmith", exc_info=True)
            return {"sent": 0, "failed": 0, "pending": -1}

    def undo(self, case_id: str) -> bool:
        """Withdraw this reviewer's verdict on a case; True if the case had to be reopened."""
        with Store.open(self.settings.db_path, create=False) as store:
            reopened = store.withdraw_verdict(case_id, self.reviewer)
        if reopened is None:
            self.send_feedback()
            return False
        self.resumer.rewind(reopened["run_id"], reopened["prompt_id"])
        self.send_feedback()
        return True

    def close(self) -> None:
        try:
            self.release()
            if self.store.pending_feedback(limit=1):
                self.send_feedback()  # ratings given after the last verdict
        finally:
            self.store.close()
            if self._resumer is not None:
                self._resumer.close()


def answer_for_case(store: Store, case: dict[str, Any]) -> dict[str, Any]:
    """What a waiting thread is resumed with: every reviewer's verdict, and the stars and
    thumbs people gave its candidates (they break a tie; see ``feedback.rating_preference``)."""
    label = {case["chosen_generation_id"]: "a", case["rejected_generation_id"]: "b"}
    verdicts = [
        {k: v[k] for k in ("reviewer", "preference", "rewrite", "comment")}
        for v in store.verdicts(case["id"])
    ]
    ratings = [
        {
            "reviewer": r["reviewer"],
            "candidate": label[r["generation_id"]],
            "stars": r["stars"],
            "thumbs": r["thumbs"],
        }
        for r in store.case_reviews(case["id"])
        if r["kind"] in ("stars", "thumbs") and r["generation_id"] in label
    ]
    return {"verdicts": verdicts, "ratings": ratings}
