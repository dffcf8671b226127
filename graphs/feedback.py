"""The feedback graph: one prompt's candidates -> critics -> reward -> pair | escalate | revise | drop.

    generate -> prepare -> (the critics with work, in parallel) -> aggregate -> pair | escalate | ...
                   ^                                                              |
                   +--------------------------------------------------------------+ (revise)

``build_feedback_graph(resources, checkpointer)`` compiles it; ``criticloop graph run`` drives it
over many prompts (``graphs/run.py``), each run given the resources (models, store) as its
context: the nodes are module functions of the state and the run's ``Runtime``. Nodes write to
the store with natural keys, so a node that runs again after a crash, or before an
``interrupt()`` on resume, duplicates nothing.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from ..agents import (
    Case,
    Critic,
    Sampling,
    Score,
    Signals,
    build_conversation,
    build_revision,
    critic_versions,
    run_critic,
    warm_thread,
)
from ..reward import Profiles, aggregate, prepare_reward_critics
from ..settings import ReviewSettings, Settings
from ..store import (
    SUPPLIED,
    CriticCall,
    CritiqueRecord,
    DecisionRecord,
    PairRecord,
    Store,
)
from ._generate import generate_and_record
from .routing import CalibratedPolicy, decide, route_after_judging
from .state import CandidateState, FeedbackState, merge_scores
from .tracing import current_trace, span_node

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig


class ThreadStores:
    """One store connection per live thread: SQLite connections must not interleave
    transactions. LangGraph runs each invoke's nodes on fresh threads, so a thread's connection
    goes back to a free list once the thread has ended and the next new thread takes it: the
    connections open are at most the threads alive at once, not one per thread ever started
    (2,000 prompts opened about 12,000 and ran out of file descriptors)."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self._owners: dict[int, tuple[threading.Thread, Store]] = {}
        self._free: list[Store] = []
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            with self._lock:
                for key, (thread, owned) in list(self._owners.items()):
                    if not thread.is_alive():
                        del self._owners[key]
                        self._free.append(owned)
                store = self._free.pop() if self._free else None
            if store is None:
                store = Store.open(self.path, create=False)
                with self._lock:
                    self._all.append(store)
            with self._lock:
                self._owners[id(store)] = (threading.current_thread(), store)
            self._local.store = store
        return store

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()
            self._owners.clear()
            self._free.clear()


@dataclass
class StageTimes:
    """Seconds spent per stage (node) across all prompts of this process's run."""

    seconds: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            self.calls[stage] += 1


@dataclass
class FeedbackResources:
    """What the graph's nodes use, given to each run as its context (never checkpointed).
    Models load on first use, so compiling costs nothing."""

    settings: Settings
    stores: ThreadStores
    profiles: Profiles
    critics: dict[str, Critic]
    sampling: Sampling
    candidates: int
    config_hash: str
    load_policy: Callable[[], Any]
    load_embedder: Callable[[], Any]
    load_teacher: Callable[[], Any] | None = None
    teacher_role: str = "revisions"  # what the teacher writes when there is one
    adapter_version: str | None = None  # the promoted adapter the policy generates with
    calibrated: CalibratedPolicy | None = None  # the active reward model's escalation policy
    times: StageTimes = field(default_factory=StageTimes)
    _policy: Any = None
    _teacher: Any = None
    _signals: Signals | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _contexts: dict[str, tuple] = field(default_factory=dict)

    # Methods, not properties: LangGraph's compile() reads the attributes that node functions
    # use (looking for subgraphs), and a property there would load the models at compile time.
    def policy(self) -> Any:
        with self._lock:
            if self._policy is None:
                self._policy = self.load_policy()
            return self._policy

    def writer(self, purpose: str) -> Any:
        """Who writes ``purpose`` ('candidates' or 'revisions'): the teacher (a LangChain
        chat model) when one is configured for it, else the policy."""
        if self.load_teacher is None or self.teacher_role not in (purpose, "both"):
            return self.policy()
        with self._lock:
            if self._teacher is None:
                self._teacher = self.load_teacher()
            return self._teacher

    def revision_config(self) -> str:
        """The generation config revisions are stored under (the teacher's, if it writes them)."""
        if self.load_teacher is None or self.teacher_role not in ("revisions", "both"):
            return f"{self.config_hash}-revision"
        return f"{self.config_hash}-revision-{self.settings.teacher.model}"

    def signals(self) -> Signals:
        policy = self.policy()  # coherence reads the response likelihood under the policy
        with self._lock:
            if self._signals is None:
                self._signals = Signals(self.load_embedder(), policy)
            return self._signals

    def context(self, prompt_id: str) -> tuple[dict, dict | None, dict | None]:
        """The prompt with its brand and campaign, read once per run."""
        cached = self._contexts.get(prompt_id)
        if cached is None:
            context = self.stores.get().prompt_context(prompt_id)
            cached = self._contexts.setdefault(prompt_id, context)
        return cached

    def forget(self, prompt_id: str) -> None:
        """Drop the prompt's context once its thread has gone as far as it goes: a run of
        100,000 prompts should not hold them all (a thread resumed later reads it again)."""
        self._contexts.pop(prompt_id, None)

    def case(self, prompt_id: str, candidate: CandidateState) -> Case:
        return Case.of(*self.context(prompt_id), candidate["text"], candidate["finish_reason"])

    def weights(self, prompt_id: str) -> dict[str, float]:
        prompt, _, _ = self.context(prompt_id)
        return self.profiles.for_prompt(prompt["task_type"], prompt["brand_id"]).weights

    def ready_thread(self) -> None:
        """Ready the calling thread to invoke the graph with these resources: crew judges need
        their SDK classes in its context (:func:`~criticloop.agents.warm_thread`)."""
        if any(getattr(c, "backend", None) == "crew" for c in self.critics.values()):
            warm_thread()


# ---- the nodes --------------------------------------------------------------------------------
# Module-level functions of the state and the run's ``Runtime``: the resources they use are the
# run's context (``graph.invoke(..., context=resources)``), never part of the graph, so they
# stay out of the checkpoints and one compiled graph serves any resources with the same critics.

Node = Callable[[FeedbackState, Runtime[FeedbackResources]], dict]

RESOURCES_KEY = "criticloop_resources"
"""Configurable key of a graph's own resources (:func:`with_resources`): the context of the runs
whose caller passes none, as LangGraph's server cannot (it sends JSON, the nodes need models)."""


def generate(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    if state.get("candidates"):
        return {}
    return {"candidates": _candidates(runtime.context, state["run_id"], state["prompt_id"])}


def prepare(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    r = runtime.context
    weights = r.weights(state["prompt_id"])
    recorded = _recorded_scores(r, state, weights)
    scored = merge_scores(state.get("scores"), recorded)
    local = [  # LLM judges need no shared signals: with only those, load no local model
        name
        for name, w in weights.items()
        if w > 0 and getattr(r.critics.get(name), "backend", "local") == "local"
    ]
    todo = [
        c for c in state["candidates"] if any(name not in scored.get(c["id"], {}) for name in local)
    ]
    if todo:
        r.signals().prepare([r.case(state["prompt_id"], c) for c in todo])
    models = [  # reward models: one batched pass per model over the unscored candidates
        name
        for name, w in weights.items()
        if w > 0 and getattr(r.critics.get(name), "backend", "local") == "reward_model"
    ]
    if any(  # every candidate goes in: the scored ones are cached, and they are rivals
        name not in scored.get(c["id"], {}) for c in state["candidates"] for name in models
    ):
        prepare_reward_critics(
            r.critics, models, [r.case(state["prompt_id"], c) for c in state["candidates"]]
        )
    due = [
        name
        for name, critic in r.critics.items()
        if weights.get(name, 0) > 0
        and any(
            name not in scored.get(c["id"], {}) and critic.applies(r.case(state["prompt_id"], c))
            for c in state["candidates"]
        )
    ]
    return {"critics_due": due, "scores": recorded} if recorded else {"critics_due": due}


def _recorded_scores(
    r: FeedbackResources, state: FeedbackState, weights: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """The scores this run already recorded for candidates the thread lacks them for. A thread
    checkpoints when its invoke ends (:data:`~.tracing.DURABILITY`), so one that a kill stopped
    mid-way starts again from there: its judges are not asked again, and it goes on with what
    they said then (a judgement is recorded once; a second answer would not be)."""
    have = state.get("scores") or {}
    wanted = {name for name, w in weights.items() if w > 0 and name in r.critics}
    missing = [c["id"] for c in state["candidates"] if wanted - have.get(c["id"], {}).keys()]
    out: dict[str, dict[str, Any]] = {}
    for row in r.stores.get().critiques_in_run(state["run_id"], missing):
        critic = r.critics.get(row["critic"])
        if (
            row["critic"] not in wanted
            or row["critic"] in have.get(row["generation_id"], {})
            or row["critic_version"] != critic.version
            or row["backend"] != getattr(critic, "backend", "local")
        ):
            continue
        evidence = dict(row["evidence"])  # CritiqueRecord.of keeps dimension and veto here
        dimension = evidence.pop("dimension", critic.dimension)
        veto = bool(evidence.pop("veto", False))
        score = Score(
            dimension,
            row["score"],
            row["confidence"],
            row["rationale"],
            row["critic_version"],
            evidence,
            veto,
        )
        out.setdefault(row["generation_id"], {})[row["critic"]] = score.as_dict()
    return out


def route_to_critics(state: FeedbackState) -> list[str]:
    """After ``prepare``: the nodes of the critics with work (weighted for the prompt's profile,
    a candidate they apply to and have not scored), or straight to ``aggregate``. A critic
    without work is not run at all: no task, span or checkpoint write of its own."""
    return [f"critic_{name}" for name in state.get("critics_due") or []] or ["aggregate"]


def judge(state: FeedbackState, runtime: Runtime[FeedbackResources], *, name: str) -> dict:
    """The node ``critic_<name>``: that critic on the candidates it has not scored."""
    r = runtime.context
    critic = r.critics[name]
    if r.weights(state["prompt_id"]).get(name, 0) <= 0:
        return {}
    done = state.get("scores") or {}
    todo = [
        c
        for c in state["candidates"]
        if name not in done.get(c["id"], {}) and critic.applies(r.case(state["prompt_id"], c))
    ]
    if not todo:
        return {}
    if getattr(critic, "pairwise", False):
        scores, calls = _judge_pairwise(r, state, name, critic, todo)
    else:
        scores, calls = _judge_each(r, state, name, critic, todo)
    store = r.stores.get()
    out: dict[str, dict[str, Any]] = {}
    backend = getattr(critic, "backend", "local")
    # The calls and what they produced land together: a kill before this loses both,
    # and the rerun records each once (a call row per critique, never a stray one).
    with store.transaction():
        for candidate_id, score in scores.items():
            store.record_critique(
                CritiqueRecord.of(candidate_id, name, score, backend, state["run_id"])
            )
            out[candidate_id] = {name: score.as_dict()}
        for i, call in enumerate(calls):
            key = (state["run_id"], state["prompt_id"], name, *call.generation_ids, i)
            store.record_critic_call(call, key=key)
    return {"scores": out} if out else {}


def judge_all(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    """The node ``aggregate``: every candidate's reward, and the decision they lead to."""
    r = runtime.context
    prompt, _, _ = r.context(state["prompt_id"])
    profile = r.profiles.for_prompt(prompt["task_type"], prompt["brand_id"])
    scores = state.get("scores") or {}
    rewards = [
        aggregate(c["id"], scores.get(c["id"], {}), profile.weights) for c in state["candidates"]
    ]
    pending = state.get("pending_revision")
    decision = decide(
        rewards,
        profile.weights,
        profile.routing,
        revisions=state.get("revisions", 0),
        revision=tuple(pending) if pending else None,
    )
    learned = r.calibrated
    if learned is not None and decision.route in ("pair", "escalate") and not pending:
        versions = critic_versions(r.critics)
        why_not = learned.applies(prompt["task_type"], versions, profile.weights)
        if why_not is None:
            decision = learned.decide(decision, rewards, profile.weights)
        else:  # say why the profile's thresholds decided instead
            decision = replace(
                decision, reason=f"{decision.reason} (profile thresholds: {why_not})"
            )
    return {
        "rewards": {rw.candidate_id: rw.as_dict() for rw in rewards},
        "decision": decision.as_dict(),
        "pending_revision": None,
    }


def revise(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    target_id = state["decision"]["chosen"]
    target = next(c for c in state["candidates"] if c["id"] == target_id)
    rounds = state.get("revisions", 0)
    revision = _revise(runtime.context, state, target, rounds)
    return {
        "candidates": [revision],
        "revisions": rounds + 1,
        "pending_revision": [revision["id"], target_id],
    }


def pair(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    r = runtime.context
    d = state["decision"]
    texts = {c["id"]: c["text"] for c in state["candidates"]}
    record = PairRecord(
        prompt_id=state["prompt_id"],
        chosen=texts[d["chosen"]],
        rejected=texts[d["rejected"]],
        source=d["source"],
        margin=d["margin"],
        chosen_generation_id=d["chosen"],
        rejected_generation_id=d["rejected"],
        run_id=state["run_id"],
    )
    store = r.stores.get()
    outcome = "revision" if d["source"] == "revision" else "pair"
    with store.transaction():  # the pair and its decision land together (one write a prompt)
        store.record_pair(record)
        _record_decision(r, state, outcome, "done", d["reason"], pair_id=record.id)
    return {"outcome": {"outcome": outcome, "reason": d["reason"], "pair_id": record.id}}


def escalate(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    r = runtime.context
    d = state["decision"]
    # Runs again when the thread resumes: recording "waiting" is an idempotent upsert.
    _record_decision(r, state, "escalated", "waiting", d["reason"])
    texts = {c["id"]: c["text"] for c in state["candidates"]}
    answer = interrupt(
        {
            "run_id": state["run_id"],
            "prompt_id": state["prompt_id"],
            "a": {"id": d["chosen"], "text": texts[d["chosen"]]},
            "b": {"id": d["rejected"], "text": texts[d["rejected"]]},
            "reason": d["reason"],
            "uncertainty": d["uncertainty"],
        }
    )
    return _apply_human_answer(r, state, answer or {})


def drop(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    reason = state["decision"]["reason"]
    _record_decision(runtime.context, state, "dropped", "done", reason)
    return {"outcome": {"outcome": "dropped", "reason": reason}}


def defer(state: FeedbackState, runtime: Runtime[FeedbackResources]) -> dict:
    # No decision is recorded: the prompt stays "to judge", and the next run judges it again.
    return {"outcome": {"outcome": "unjudged", "reason": state["decision"]["reason"]}}


NODES: dict[str, Node] = {
    "generate": generate,
    "prepare": prepare,
    "aggregate": judge_all,
    "revise": revise,
    "pair": pair,
    "escalate": escalate,
    "drop": drop,
    "defer": defer,
}
"""The nodes by name, besides one ``critic_<name>`` (:func:`judge`) per critic."""


def build_feedback_graph(resources: FeedbackResources, checkpointer: Any = None):
    """Compile the feedback graph for ``resources``' critics (a node each); pass a checkpointer
    to persist threads. Its runs take the resources as their context:
    ``graph.invoke(state, config, context=resources)`` (:func:`with_resources` binds them)."""
    builder = StateGraph(FeedbackState)
    # No ``context_schema``: LangGraph would turn a dict context into FeedbackResources(**dict)
    # and describe it as JSON schema for its server, and neither works for live models.
    critic_nodes: dict[str, Node] = {
        f"critic_{name}": functools.partial(judge, name=name) for name in resources.critics
    }
    for name, fn in {**NODES, **critic_nodes}.items():
        stage = name.removeprefix("critic_") if name in critic_nodes else name
        builder.add_node(name, _node(name, fn, stage))
    builder.add_edge(START, "generate")
    builder.add_edge("generate", "prepare")
    # Fan out to the critics with work; each goes on to aggregate, which runs once, in the step
    # after them (they all run in one step).
    builder.add_conditional_edges("prepare", route_to_critics, [*critic_nodes, "aggregate"])
    for name in critic_nodes:
        builder.add_edge(name, "aggregate")
    builder.add_conditional_edges(
        "aggregate",
        route_after_judging,
        {r: r for r in ("pair", "escalate", "revise", "drop", "defer")},
    )
    builder.add_edge("revise", "prepare")
    for terminal in ("pair", "escalate", "drop", "defer"):
        builder.add_edge(terminal, END)
    return builder.compile(checkpointer=checkpointer, name="feedback")


def with_resources(graph: Any, resources: FeedbackResources) -> Any:
    """``graph`` with ``resources`` as the context of every run that is given none: for callers
    that cannot pass Python objects (LangGraph's server and Studio). They ride in the graph's
    config, which checkpoints and traces keep only the plain values of."""
    return graph.with_config(configurable={RESOURCES_KEY: resources})


def _node(name: str, fn: Node, stage: str) -> Callable:
    """What LangGraph runs as node ``name``: ``fn`` with the run's resources, timed (``stage``)
    and recorded as a span of its trace."""
    traced = span_node(name, fn, stage)

    # The parameter names and the RunnableConfig annotation are how LangGraph knows to pass them.
    def node(
        state: FeedbackState, config: RunnableConfig, runtime: Runtime[FeedbackResources]
    ) -> dict:
        if not isinstance(runtime.context, FeedbackResources):
            bound = (config.get("configurable") or {}).get(RESOURCES_KEY)
            if bound is None:
                raise TypeError(
                    f"node {name}: the feedback graph runs with its FeedbackResources as "
                    "context: graph.invoke(..., context=resources)"
                )
            runtime = runtime.override(context=bound)
        return traced(state, config, runtime)

    node.__name__ = name
    return node


def _judge_each(
    r: FeedbackResources,
    state: FeedbackState,
    name: str,
    critic: Critic,
    todo: list[CandidateState],
) -> tuple[dict[str, Score], list[CriticCall]]:
    """A pointwise critic on each candidate: the scores, and each call timed for
    ``critic_calls``."""
    scores: dict[str, Score] = {}
    calls: list[CriticCall] = []
    for candidate in todo:
        began = time.perf_counter()
        score = run_critic(critic, r.case(state["prompt_id"], candidate), r.signals())
        calls.append(
            CriticCall(
                critic=name,
                backend=getattr(critic, "backend", "local"),
                generation_ids=(candidate["id"],),
                seconds=time.perf_counter() - began,
                ok=score.scored,
                error=None if score.scored else score.rationale[:300],
                trace_id=current_trace(),
                run_id=state["run_id"],
                prompt_id=state["prompt_id"],
            )
        )
        scores[candidate["id"]] = score
    return scores, calls


def _judge_pairwise(
    r: FeedbackResources,
    state: FeedbackState,
    name: str,
    critic: Any,
    todo: list[CandidateState],
) -> tuple[dict[str, Score], list[CriticCall]]:
    """A pairwise critic (an LLM judge) over the candidates it has not scored, two at a time;
    an odd one out is compared with the candidate it revises (or another), whose own score
    from that comparison is not kept. Returns the scores and each call (tokens, seconds,
    cost) for ``critic_calls``."""
    pid = state["prompt_id"]
    scores: dict[str, Score] = {}
    records: list[CriticCall] = []
    for x, y, keep_y in pair_up(todo, state["candidates"]):
        x_case = r.case(pid, x)
        try:
            if y is None:  # nothing to compare with: judge it alone
                scores[x["id"]] = critic(x_case, None)
                calls = critic.calls()
            else:
                judgement = critic.compare(x_case, r.case(pid, y), x["id"], y["id"])
                scores[x["id"]] = judgement.scores[0]
                if keep_y:
                    scores[y["id"]] = judgement.scores[1]
                calls = judgement.calls
        except Exception as exc:  # noqa: BLE001 - a critic never crashes a run
            reason = f"critic failed: {type(exc).__name__}: {str(exc)[:200]}"
            for c in (x, y) if keep_y else (x,):
                scores[c["id"]] = Score.unscored(critic.dimension, reason, critic.version)
            continue
        for call in calls:
            records.append(
                CriticCall.of_judge(
                    name,
                    call,
                    generation_ids=(x["id"],),
                    trace_id=current_trace(),
                    run_id=state["run_id"],
                    prompt_id=pid,
                )
            )
    return scores, records


def pair_up(
    todo: list[CandidateState], candidates: list[CandidateState]
) -> list[tuple[CandidateState, CandidateState | None, bool]]:
    """(x, y, keep y's score): the unscored candidates two by two; an odd one out meets the
    candidate it revises, else the first other one (already scored: its new score is not kept)."""
    pairs: list[tuple[CandidateState, CandidateState | None, bool]] = []
    rest = list(todo)
    while len(rest) >= 2:
        pairs.append((rest.pop(0), rest.pop(0), True))
    if rest:
        x = rest[0]
        others = [c for c in candidates if c["id"] != x["id"]]
        opponent = next((c for c in others if c["id"] == x.get("revises")), None)
        pairs.append((x, opponent or (others[0] if others else None), False))
    return pairs


def _candidates(r: FeedbackResources, run_id: str, prompt_id: str) -> list[CandidateState]:
    """Supplied candidates if the prompt came with some, else K from the policy (generating
    only the ones not already stored under this generation config)."""
    store = r.stores.get()
    stored = store.generations_for(prompt_id)
    supplied = [g for g in stored if g["config_hash"] == SUPPLIED]
    if supplied:
        return [_candidate(g, SUPPLIED) for g in supplied]
    mine = {g["candidate_index"]: g for g in stored if g["config_hash"] == r.config_hash}
    missing = [i for i in range(r.candidates) if i not in mine]
    if missing:
        prompt, brand, campaign = r.context(prompt_id)
        request = [(prompt_id, build_conversation(prompt, brand, campaign), missing)]
        for _ in generate_and_record(
            store,
            r.writer("candidates"),
            request,
            sampling=r.sampling,
            config_hash=r.config_hash,
            batch_size=len(missing),
            run_id=run_id,
        ):
            pass
        mine = {
            g["candidate_index"]: g
            for g in store.generations_for(prompt_id)
            if g["config_hash"] == r.config_hash
        }
    return [_candidate(mine[i], "policy") for i in range(r.candidates)]


def _candidate(row: dict[str, Any], source: str, revises: str | None = None) -> CandidateState:
    return CandidateState(
        id=row["id"],
        text=row["text"],
        source=source,
        finish_reason=row["finish_reason"],
        revises=revises,
    )


def _revise(
    r: FeedbackResources, state: FeedbackState, target: CandidateState, rounds: int
) -> CandidateState:
    """Rewrite ``target`` with the critics' rationales; stored like any generation."""
    store = r.stores.get()
    config = r.revision_config()
    index = rounds  # one revision per round: a re-run node finds it stored
    existing = {
        g["candidate_index"]: g
        for g in store.generations_for(state["prompt_id"])
        if g["config_hash"] == config
    }
    if index not in existing:
        prompt, _, _ = r.context(state["prompt_id"])
        scores = (state.get("scores") or {}).get(target["id"], {})
        problems = [
            s["rationale"]
            for s in sorted(
                scores.values(), key=lambda s: (s["score"] is not None, s["score"] or 0)
            )
            if s.get("veto") or s["score"] is None or s["score"] < 0.6
        ][:4] or ["make it more helpful, clear and specific"]
        conversation = build_revision(prompt, target["text"], problems)
        sampling = Sampling(
            r.sampling.max_new_tokens,
            min(r.sampling.temperature, 0.7),
            r.sampling.top_p,
            r.sampling.seed + 1 + rounds,
        )
        request = [(state["prompt_id"], conversation, [index])]
        for _ in generate_and_record(
            store,
            r.writer("revisions"),
            request,
            sampling=sampling,
            config_hash=config,
            batch_size=1,
            run_id=state["run_id"],
        ):
            pass
        existing = {
            g["candidate_index"]: g
            for g in store.generations_for(state["prompt_id"])
            if g["config_hash"] == config
        }
    return _candidate(existing[index], "revision", revises=target["id"])


def _record_decision(
    r: FeedbackResources,
    state: FeedbackState,
    outcome: str,
    status: str,
    reason: str,
    pair_id: str | None = None,
) -> None:
    d = state.get("decision") or {}
    r.stores.get().record_decision(
        DecisionRecord(
            run_id=state["run_id"],
            prompt_id=state["prompt_id"],
            config_hash=r.config_hash,
            outcome=outcome,
            status=status,
            reason=reason,
            rewards=state.get("rewards") or {},
            uncertainty=d.get("uncertainty"),
            margin=d.get("margin"),
            chosen_generation_id=d.get("chosen"),
            rejected_generation_id=d.get("rejected"),
            pair_id=pair_id,
            reward_model=d.get("reward_model"),
        )
    )


def _apply_human_answer(r: FeedbackResources, state: FeedbackState, answer: dict[str, Any]) -> dict:
    """Turn people's verdicts (or the run's human budget running out) into pairs.

    ``answer``: ``{"over_budget": True}`` or ``{"verdicts": [{"reviewer", "preference": a|b|tie,
    "rewrite", "comment"}, ...]}``, A being the critics' choice. The verdicts are already in
    the store (reviews); this makes what follows from them: a ``human`` pair for the majority
    preference, and for each rewrite, ``human-revision`` pairs of the rewrite over both
    candidates.
    """
    d = state["decision"]
    if answer.get("over_budget"):
        reason = f"human budget exhausted ({d['reason']})"
        _record_decision(r, state, "dropped", "done", reason)
        return {"outcome": {"outcome": "dropped", "reason": reason}}
    verdicts = answer.get("verdicts") or []
    if not verdicts or any(v.get("preference") not in ("a", "b", "tie") for v in verdicts):
        raise ValueError(f"a review answer needs verdicts of a, b or tie, got {answer!r}")
    a, b = d["chosen"], d["rejected"]
    texts = {c["id"]: c["text"] for c in state["candidates"]}
    votes = Counter(v["preference"] for v in verdicts)
    (top, count), *rest = votes.most_common()
    winner = top if top != "tie" and all(n < count for _, n in rest) else None
    rated_by = None
    if winner is None:
        winner, rated_by = rating_preference(answer.get("ratings") or [], r.settings.review)

    def human_pair(chosen_text: str, rejected: str, source: str, chosen: str | None) -> PairRecord:
        return PairRecord(
            prompt_id=state["prompt_id"],
            chosen=chosen_text,
            rejected=texts[rejected],
            source=source,
            chosen_generation_id=chosen,
            rejected_generation_id=rejected,
            run_id=state["run_id"],
        )

    records = []
    if winner:
        chosen, rejected = (a, b) if winner == "a" else (b, a)
        records.append(human_pair(texts[chosen], rejected, "human", chosen))
    for v in verdicts:
        rewrite = (v.get("rewrite") or "").strip()
        if rewrite:
            edited, other = (a, b) if v["preference"] == "a" else (b, a)
            for rejected in (edited, other):
                if texts[rejected].strip() != rewrite:
                    records.append(human_pair(rewrite, rejected, "human-revision", None))
    store = r.stores.get()
    reason = _verdicts_reason(verdicts, None if rated_by else winner)
    if rated_by:
        reason += f"; ratings prefer {winner.upper()} ({', '.join(rated_by)})"
    pair_id = records[0].id if records else None
    with store.transaction():  # one settler writes one round's pairs, from the verdicts in force
        case = store.get_decision(state["run_id"], state["prompt_id"])
        if case["status"] != "waiting" or _verdict_set(verdicts) != _verdict_set(
            store.verdicts(case["id"])
        ):
            # Settled by another process, or a verdict changed since this answer was read:
            # the store stands as it is (a later settle resumes the thread with what is there).
            return {"outcome": {"outcome": case["outcome"], "reason": case["reason"]}}
        for record in records:
            store.record_pair(record)
        _record_decision(r, state, "human", "done", reason, pair_id=pair_id)
    return {
        "outcome": {
            "outcome": "human",
            "reason": reason,
            "pair_id": pair_id,
            "pairs": [p.id for p in records],
        }
    }


def _verdict_set(verdicts: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(v["reviewer"], v["preference"], (v.get("rewrite") or "").strip()) for v in verdicts}


def rating_preference(
    ratings: list[dict[str, Any]], review: ReviewSettings
) -> tuple[str | None, list[str]]:
    """The candidate ("a" or "b") people's stars and thumbs prefer, for a case their verdicts
    left undecided (a tie, or no majority); and who rated so.

    The seed systems' DPO rule, per reviewer: one candidate rated at least
    ``rating_chosen_min`` stars or thumbs up, the other at most ``rating_rejected_max`` stars or
    thumbs down. A reviewer whose stars and thumbs disagree on a candidate says nothing of it;
    reviewers who prefer different candidates cancel out.
    """
    grades: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rating in ratings:
        stars, thumbs = rating.get("stars"), rating.get("thumbs")
        if stars is not None:
            grade = (
                "good"
                if stars >= review.rating_chosen_min
                else "bad"
                if stars <= review.rating_rejected_max
                else None
            )
        else:
            grade = {"up": "good", "down": "bad"}.get(thumbs or "")
        if grade:
            grades[rating["reviewer"]][rating["candidate"]].add(grade)
    picks = {}
    for reviewer, graded in grades.items():
        for this, other in (("a", "b"), ("b", "a")):
            if graded[this] == {"good"} and graded[other] == {"bad"}:
                picks[reviewer] = this
    if len(set(picks.values())) != 1:
        return None, []
    return next(iter(picks.values())), sorted(picks)


def _verdicts_reason(verdicts: list[dict[str, Any]], winner: str | None) -> str:
    def said(v: dict[str, Any]) -> str:
        choice = v["preference"].upper() if v["preference"] != "tie" else "a tie"
        return f"rewrote {choice}" if v.get("rewrite") else f"chose {choice}"

    if len(verdicts) == 1:
        return f"{verdicts[0]['reviewer']} {said(verdicts[0])}"
    each = "; ".join(f"{v['reviewer']} {said(v)}" for v in verdicts)
    return f"{each}: {'majority ' + winner.upper() if winner else 'no majority'}"
