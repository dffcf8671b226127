"""``criticloop graph run``: the nightly job. The feedback graph over every prompt that needs it.

    criticloop graph run            # judge new prompts (or those not judged with this model)

Each prompt is a LangGraph thread ``<run id>/<prompt id>`` checkpointed in
``$CRITICLOOP_HOME/checkpoints.db``. A run killed at any point is continued by the next
``criticloop graph run``: finished threads are skipped, started ones resume from their last
checkpoint, and the store's natural keys keep pairs and critiques from doubling. Escalated
prompts wait at an ``interrupt()`` while the run moves on; at the end, escalations beyond the
human budget (the least uncertain) are dropped.

The training hand-off is the pairs table: ``criticloop pairs export`` or the training job read
the pairs this run recorded (``pairs.run_id``).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from ..agents import Critic, Policy, Sampling, build_critic, load_embedder, policy_ref
from ..settings import Settings
from ..store import SUPPLIED, Store
from ._generate import generate_and_record, generation_config_hash, missing_requests
from .feedback import FeedbackResources, ThreadStores, build_feedback_graph
from .profiles import Profiles

log = logging.getLogger(__name__)
RUN_KIND = "graph"


@dataclass(frozen=True)
class RunOptions:
    sampling: Sampling
    candidates: int
    concurrency: int = 2
    prompt_ids: Sequence[str] = ()
    task_types: Sequence[str] = ()
    limit: int | None = None
    human_budget: int | None = None  # None: the profile's
    progress: bool = True


def open_checkpointer(settings: Settings):
    """The SQLite checkpointer that keeps graph threads across processes."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.checkpoints_path, check_same_thread=False, timeout=60)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def build_critics(profiles: Profiles) -> dict[str, Critic]:
    from ..agents import critics as _registers_builtins  # noqa: F401
    from ..agents._critic import CRITICS

    return {name: build_critic(name, **profiles.critic_options(name)) for name in sorted(CRITICS)}


def thread_config(run_id: str, prompt_id: str) -> dict[str, Any]:
    return {
        "configurable": {"thread_id": f"{run_id}/{prompt_id}"},
        "run_name": f"feedback {prompt_id}",
        "tags": ["criticloop", RUN_KIND],
        "metadata": {"run_id": run_id, "prompt_id": prompt_id},
    }


def make_resources(
    settings: Settings,
    stores: ThreadStores,
    profiles: Profiles,
    sampling: Sampling,
    candidates: int,
    *,
    critics: dict[str, Critic] | None = None,
    load_policy: Callable[[], Any] | None = None,
    load_embedder_fn: Callable[[], Any] | None = None,
) -> FeedbackResources:
    ref = policy_ref(settings, convert=False)  # the name; the model is converted when loaded
    adapter = None
    if settings.db_path.exists():
        with Store.open(settings.db_path, create=False) as store:
            adapter = store.promoted_adapter(ref.name)
    version = adapter["version"] if adapter else None
    config_hash = generation_config_hash(
        ref.name, version, sampling, settings.generation.max_prompt_tokens
    )

    def policy_with_adapter() -> Policy:
        policy = Policy.load(settings, policy_ref(settings))
        if adapter:
            policy.load_adapter(adapter["path"], adapter["version"])
        return policy

    return FeedbackResources(
        settings=settings,
        stores=stores,
        profiles=profiles,
        critics=critics if critics is not None else build_critics(profiles),
        sampling=sampling,
        candidates=candidates,
        config_hash=config_hash,
        load_policy=load_policy or policy_with_adapter,
        load_embedder=load_embedder_fn or (lambda: load_embedder(settings)),
    )


def advance(graph: Any, run_id: str, prompt_id: str) -> str:
    """Run (or continue) one prompt's thread as far as it goes; return where it stands."""
    config = thread_config(run_id, prompt_id)
    start = {"run_id": run_id, "prompt_id": prompt_id, "revisions": 0}
    snapshot = graph.get_state(config)
    if not snapshot.values:
        graph.invoke(start, config)
    elif snapshot.next and not _interrupted(snapshot):
        graph.invoke(None, config)  # a crash left it mid-way: continue from the checkpoint
    elif not _interrupted(snapshot) and not snapshot.values.get("outcome"):
        # A kill can leave a thread whose last checkpoint has nowhere to go and no outcome.
        # Run it again from the start: every node's records are keyed, so nothing doubles.
        log.warning("thread %s/%s stopped without an outcome; running it again", run_id, prompt_id)
        graph.invoke(start, config)
    snapshot = graph.get_state(config)
    if _interrupted(snapshot):
        return "escalated"
    return (snapshot.values.get("outcome") or {}).get("outcome", "unfinished")


def _interrupted(snapshot: Any) -> bool:
    return any(task.interrupts for task in snapshot.tasks)


def run_feedback(
    settings: Settings,
    options: RunOptions,
    *,
    critics: dict[str, Critic] | None = None,
    load_policy: Callable[[], Any] | None = None,
    load_embedder_fn: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run the feedback graph over the prompts that need it; return the run's summary."""
    from langgraph.types import Command

    began = time.perf_counter()
    profiles = Profiles.load(settings.profiles)
    with Store.open(settings.db_path, create=False) as store:
        run = store.claim_unfinished_run(RUN_KIND)
        if run is not None:
            config = run["config"]
            sampling = Sampling(**config["sampling"])
            candidates = config["candidates"]
            prompt_ids = config["prompts"]
            run_id = run["id"]
            log.info("continuing unfinished run %s (%d prompts)", run_id, len(prompt_ids))
        else:
            sampling, candidates = options.sampling, options.candidates
            run_id = None
    stores = ThreadStores(settings.db_path)
    resources = make_resources(
        settings,
        stores,
        profiles,
        sampling,
        candidates,
        critics=critics,
        load_policy=load_policy,
        load_embedder_fn=load_embedder_fn,
    )
    if run is not None:
        resources.config_hash = run["config"]["config_hash"]
    store = stores.get()
    if run_id is None:
        prompts = store.prompts_to_judge(
            resources.config_hash,
            prompt_ids=options.prompt_ids,
            task_types=options.task_types,
            limit=options.limit,
        )
        prompt_ids = [p["id"] for p in prompts]
        if not prompt_ids:  # nothing new: no run to record
            stores.close()
            return {
                "run_id": None,
                "model": policy_ref(settings, convert=False).name,
                "profile": profiles.version,
                "prompts": 0,
                "database": str(settings.db_path),
            }
        run_id = store.start_run(
            RUN_KIND,
            {
                "model": policy_ref(settings, convert=False).name,
                "config_hash": resources.config_hash,
                "sampling": sampling.as_dict(),
                "candidates": candidates,
                "profile": profiles.as_record(),
                "critics": {name: c.version for name, c in resources.critics.items()},
                "prompts": prompt_ids,
            },
        )
    checkpointer = open_checkpointer(settings)
    graph = build_feedback_graph(resources, checkpointer)
    states: dict[str, str] = {}
    status = "failed"
    try:
        began_generating = time.perf_counter()
        _pregenerate(resources, store, run_id, prompt_ids, options.progress)
        resources.times.add("pregenerate", time.perf_counter() - began_generating)
        bar = _progress(len(prompt_ids), options.progress)
        with ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="feedback"
        ) as pool:
            futures = {pool.submit(advance, graph, run_id, pid): pid for pid in prompt_ids}
            for future in as_completed(futures):
                states[futures[future]] = future.result()
                bar.update(1)
        bar.close()
        budget = profiles.human_budget if options.human_budget is None else options.human_budget
        waiting = store.waiting_decisions(run_id)
        for decision in waiting[budget:]:
            graph.invoke(
                Command(resume={"over_budget": True}), thread_config(run_id, decision["prompt_id"])
            )
        status = "done"
    finally:
        summary = _summary(store, run_id, resources, began, states)
        store.finish_run(run_id, status, summary)
        stores.close()
        checkpointer.conn.close()
    return summary


def _pregenerate(
    r: FeedbackResources, store: Store, run_id: str, prompt_ids: Sequence[str], progress: bool
) -> None:
    """Sample every prompt's missing candidates up front, batched across prompts (several
    times the tokens/s of one prompt's K at a time); the graph's generate node then finds them
    stored. Prompts that came with their own candidates need none."""
    prompts = [store.get_prompt(pid) for pid in prompt_ids]
    prompts = [
        p
        for p in prompts
        if not any(g["config_hash"] == SUPPLIED for g in store.generations_for(p["id"]))
    ]
    requests, _ = missing_requests(store, prompts, r.config_hash, r.candidates)
    if not requests:
        return
    total = sum(len(indices) for _, _, indices in requests)
    bar = _progress(total, progress, "generating", "cand")
    for _ in generate_and_record(
        store,
        r.policy(),
        requests,
        sampling=r.sampling,
        config_hash=r.config_hash,
        batch_size=r.settings.generation.batch_size,
        run_id=run_id,
        on_batch=lambda stats: bar.update(stats.sequences),
    ):
        pass
    bar.close()


def _summary(
    store: Store, run_id: str, resources: FeedbackResources, began: float, states: dict[str, str]
) -> dict[str, Any]:
    report = store.run_report(run_id)
    signals = resources._signals
    return {
        "run_id": run_id,
        "model": policy_ref(resources.settings, convert=False).name,
        "profile": resources.profiles.version,
        **report,
        "wall_seconds": round(time.perf_counter() - began, 2),
        "stage_seconds": {k: round(v, 3) for k, v in resources.times.seconds.most_common()},
        "shared_signals": dict(signals.stats) if signals else {},
        "database": str(store.path),
    }


def _progress(total: int, enabled: bool, desc: str = "judging", unit: str = "prompt"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled)
