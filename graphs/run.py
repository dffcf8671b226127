"""``criticloop graph run``: the nightly job. The feedback graph over every prompt that needs it.

    criticloop graph run            # judge new prompts (or those not judged with this model)

Each prompt is a LangGraph thread ``<run id>/<prompt id>`` checkpointed in
``$CRITICLOOP_HOME/checkpoints.db``. A run killed at any point is continued by the next
``criticloop graph run``: finished threads are skipped, started ones resume from their last
checkpoint, and the store's natural keys keep pairs and critiques from doubling. Escalated
prompts wait at an ``interrupt()`` while the run moves on; at the end, escalations beyond the
human budget (the least uncertain) are dropped.

One prompt cannot stop the night: a prompt whose generation or judging fails (a tokenizer that
gives up, a prompt too long to tokenize, a judge that raises on it) is quarantined with its
reason and the run goes on; later runs leave it out until it is edited or named with ``-p``.
A prompt the process died in twice while judging it is quarantined the same way; after one such
death the continued run judges the suspects one at a time first. Prompts no critic could score
(a dead judge endpoint) get no decision and are judged again by the next run.

The training hand-off is the pairs table: ``criticloop pairs export`` or the training job read
the pairs this run recorded (``pairs.run_id``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from ..agents import (
    Critic,
    Sampling,
    critic_versions,
    endpoint_limits,
    policy_ref,
)
from ..errors import CriticloopError
from ..progress import progress
from ..reward import (
    Profiles,
    build_critics,  # noqa: F401 - graphs.run.build_critics, as before
    drift_flags,
)
from ..settings import Settings
from ..store import SUPPLIED, Store
from ._generate import generate_and_record, missing_requests
from ._resources import _prompt_fault, _why, make_resources
from ._threads import (  # noqa: F401 - graphs.run.thread_config etc., as before
    RUN_KIND,
    advance,
    open_checkpointer,
    thread_config,
    trace_metadata,
    waiting_for_review,
)
from ._workers import WorkerReport
from .feedback import FeedbackResources, ThreadStores, build_feedback_graph
from .routing import active_policy
from .tracing import Tracer, post_feedback

log = logging.getLogger(__name__)


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
    workers: int = 1  # processes that judge (graphs/_workers.py); 1: this one


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

    if options.workers > 1 and any(x is not None for x in (critics, load_policy, load_embedder_fn)):
        raise ValueError("workers build their own critics and models: pass none to run_feedback")
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
    if resources.load_teacher is not None:
        resources._teacher = (
            resources.load_teacher()
        )  # a bad teacher setting fails here, not mid-run
    if run is not None:
        resources.config_hash = run["config"]["config_hash"]
    store = stores.get()
    resources.calibrated = active_policy(store)
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
            return _revise_logs(
                settings,
                resources,
                {
                    "run_id": None,
                    "model": policy_ref(settings, convert=False).name,
                    "profile": profiles.version,
                    "prompts": 0,
                    "database": str(settings.db_path),
                },
            )
        run_id = store.start_run(
            RUN_KIND,
            {
                "model": policy_ref(settings, convert=False).name,
                "config_hash": resources.config_hash,
                "sampling": sampling.as_dict(),
                "candidates": candidates,
                "profile": profiles.as_record(),
                "adapter": resources.adapter_version,
                "teacher": settings.teacher.model,
                "reward_model": resources.calibrated.version if resources.calibrated else None,
                "critics": critic_versions(resources.critics),
                "prompts": prompt_ids,
            },
        )
    checkpointer = open_checkpointer(settings)
    graph = build_feedback_graph(resources, checkpointer)
    tracer = Tracer(settings, trace_metadata(store.get_run(run_id), resources))
    states: dict[str, str] = {}
    failed: dict[str, str] = {}  # prompt -> why it was quarantined in this run
    report = None  # the workers', when there are workers
    status = "failed"
    try:
        # The process died inside these prompts' graphs before (a kill, or one of them).
        suspects = []
        for pid, deaths in store.unfinished_traces(run_id).items():
            if deaths >= 2:
                failed[pid] = f"the run died {deaths} times while judging it"
                store.record_prompt_failure(pid, "judge", failed[pid], run_id)
            else:
                suspects.append(pid)
        began_generating = time.perf_counter()
        todo = [pid for pid in prompt_ids if pid not in failed]
        # A served policy batches on its server: judge each prompt as soon as its candidates
        # land rather than after every prompt's (one process; a run after a death, whose
        # suspects go alone first, and workers, who take their prompts at once, wait).
        overlap = bool(settings.policy.base_url) and options.workers <= 1 and not suspects
        if not overlap:
            failed |= _pregenerate(resources, store, run_id, todo, options.progress)
            resources.times.add("pregenerate", time.perf_counter() - began_generating)
            todo = [pid for pid in todo if pid not in failed]
        bar = progress(len(todo), options.progress)

        def judge(pid: str) -> None:
            try:
                states[pid] = advance(graph, tracer, resources, run_id, pid)
            except Exception as exc:  # noqa: BLE001 - one prompt's failure quarantines it
                if not _prompt_fault(exc):
                    raise
                log.warning("prompt %s failed and is set aside: %s", pid, _why(exc))
                failed[pid] = f"judging failed: {_why(exc)}"
                stores.get().record_prompt_failure(pid, "judge", failed[pid], run_id)
            bar.update(1)

        for pid in (p for p in todo if p in suspects):  # alone: one of them may kill us
            judge(pid)
        rest = [pid for pid in todo if pid not in suspects]
        if overlap:
            failed |= _generate_while_judging(
                resources, stores, run_id, todo, judge, options.concurrency
            )
        elif options.workers > 1 and len(rest) > 1:
            from ._workers import judge_in_workers, run_state

            def done(pid: str, state: str, why: str | None) -> None:
                if why is None:
                    states[pid] = state
                else:
                    failed[pid] = why
                bar.update(1)

            report = judge_in_workers(
                settings,
                run_id=run_id,
                state=run_state(resources),
                prompt_ids=rest,
                workers=min(options.workers, len(rest)),
                concurrency=options.concurrency,
                on_result=done,
            )
        else:
            with ThreadPoolExecutor(
                max_workers=options.concurrency, thread_name_prefix="feedback"
            ) as pool:
                for future in as_completed([pool.submit(judge, pid) for pid in rest]):
                    future.result()
        bar.close()
        budget = profiles.human_budget if options.human_budget is None else options.human_budget
        waiting = store.waiting_decisions(run_id)
        for decision in waiting[budget:]:
            tracer.invoke(
                graph,
                Command(resume={"over_budget": True}),
                thread_config(run_id, decision["prompt_id"]),
                store,
                run_id=run_id,
                prompt_id=decision["prompt_id"],
                kind="budget",
                context=resources,
            )
        status = "done"
    finally:
        tracer.flush()
        if tracer.enabled:
            try:
                post_feedback(settings, store)  # decisions an earlier review could not send
            except Exception:  # noqa: BLE001 - LangSmith is an observer, never the run
                log.warning("could not send review feedback to LangSmith", exc_info=True)
        summary = _summary(store, run_id, resources, began, states, tracer, graph, failed, report)
        store.finish_run(run_id, status, summary)
        stores.close()
        checkpointer.conn.close()
    return _revise_logs(settings, resources, summary)


def _revise_logs(
    settings: Settings, resources: FeedbackResources, summary: dict[str, Any]
) -> dict[str, Any]:
    """The revise step of feedback logs (``graphs/_logs.py``), after judging: the answers users
    rated down and nobody revised yet, with this run's models and critics. Its summary goes
    under ``log_revision`` (absent when there was nothing to revise or the step is off); a
    failure there is logged and reported, never the run's."""
    if not settings.feedback.revise_nightly:
        return summary
    from ._logs import log_revision_pending, run_log_revision

    try:
        if log_revision_pending(settings):
            summary["log_revision"] = run_log_revision(settings, resources=resources)
    except Exception as exc:  # noqa: BLE001 - the judged run stands; the next run tries again
        log.warning("the revise step of feedback logs failed", exc_info=True)
        summary["log_revision"] = {"error": _why(exc)}
    return summary


def _generate_while_judging(
    r: FeedbackResources,
    stores: ThreadStores,
    run_id: str,
    prompt_ids: Sequence[str],
    judge: Callable[[str], None],
    concurrency: int,
) -> dict[str, str]:
    """Generate the prompts' candidates on a thread of their own while ``concurrency`` threads
    judge each prompt whose candidates are all stored; return the prompts generation set
    aside. A generation that fails outside any one prompt stops the run once the prompts
    already handed to the judges are judged."""
    ready: queue.SimpleQueue[str | BaseException | None] = queue.SimpleQueue()
    stop = threading.Event()  # the judging failed: generate nothing more
    outcome: dict[str, str] = {}

    def on_ready(pid: str) -> None:
        if stop.is_set():
            raise _Stopped("judging stopped")
        ready.put(pid)

    def produce() -> None:
        began = time.perf_counter()
        try:
            outcome.update(
                _pregenerate(r, stores.get(), run_id, prompt_ids, False, on_ready=on_ready)
            )
            ready.put(None)
        except BaseException as exc:  # noqa: BLE001 - raised again on the run's thread
            ready.put(exc)
        finally:
            r.times.add("pregenerate", time.perf_counter() - began)

    producer = threading.Thread(target=produce, name="pregenerate", daemon=True)
    producer.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="feedback") as pool:
            futures = []
            while (item := ready.get()) is not None:
                if isinstance(item, _Stopped):
                    break  # a judge failed: its error is raised below
                if isinstance(item, BaseException):
                    raise item  # once the prompts already handed over are judged
                future = pool.submit(judge, item)
                future.add_done_callback(lambda f: f.exception() is None or stop.set())
                futures.append(future)
            for future in as_completed(futures):
                future.result()
    finally:
        stop.set()
    producer.join()
    return outcome


class _Stopped(CriticloopError):
    """Raised in the generating thread once the judging has failed: a run's error, so
    ``_pregenerate`` neither retries each prompt alone nor records any as failed."""


def _pregenerate(
    r: FeedbackResources,
    store: Store,
    run_id: str,
    prompt_ids: Sequence[str],
    show: bool,
    on_ready: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Sample every prompt's missing candidates up front, batched across prompts (several
    times the tokens/s of one prompt's K at a time); the graph's generate node then finds them
    stored. Prompts that came with their own candidates need none.

    Returns the prompts quarantined here, with why: a turn longer than the input limit (a
    prompt stored before the limit, which would make the tokenizer give up after gigabytes),
    or one whose generation fails; after a failed batch each prompt is tried alone, so only
    the one that fails is set aside.

    ``on_ready(prompt_id)``, where given, is called for each prompt once all its candidates
    are stored (at once for those that have them already), never for one set aside."""
    limit = r.settings.limits.text_chars
    failed: dict[str, str] = {}
    prompts = []
    for pid in prompt_ids:
        prompt = store.get_prompt(pid)
        if any(g["config_hash"] == SUPPLIED for g in store.generations_for(pid)):
            continue
        longest = max(len(m["content"]) for m in prompt["messages"])
        if longest > limit:
            failed[pid] = f"a turn of {longest} characters (over CRITICLOOP_LIMITS__TEXT_CHARS)"
            store.record_prompt_failure(pid, "size", failed[pid], run_id)
            continue
        prompts.append(prompt)
    requests, _ = missing_requests(store, prompts, r.config_hash, r.candidates)
    missing = {key: set(indices) for key, _, indices in requests}
    if on_ready is not None:
        for pid in prompt_ids:
            if pid not in failed and pid not in missing:
                on_ready(pid)

    def stored(batch: Sequence[Any]) -> None:
        for candidate in batch:
            left = missing.get(candidate.key)
            if left is None or candidate.index not in left:
                continue
            left.discard(candidate.index)
            if not left and on_ready is not None:
                on_ready(candidate.key)

    if not requests:
        return failed
    total = sum(len(indices) for _, _, indices in requests)
    bar = progress(total, show, "generating", "cand")

    def generate(batch: Sequence[tuple[str, list[dict[str, str]], list[int]]]) -> None:
        for landed in generate_and_record(
            store,
            r.writer("candidates"),
            batch,
            sampling=r.sampling,
            config_hash=r.config_hash,
            batch_size=r.settings.generation.batch_size,
            run_id=run_id,
            on_batch=lambda stats: bar.update(stats.sequences),
        ):
            stored(landed)

    try:
        generate(requests)
    except Exception as exc:  # noqa: BLE001 - find the prompt that failed, go on without it
        if not _prompt_fault(exc):
            raise
        log.warning("generation failed (%s); trying each prompt alone", _why(exc))
        for request in missing_requests(store, prompts, r.config_hash, r.candidates)[0]:
            try:
                generate([request])
            except Exception as alone:  # noqa: BLE001
                if not _prompt_fault(alone):
                    raise
                failed[request[0]] = f"generation failed: {_why(alone)}"
                store.record_prompt_failure(request[0], "generate", failed[request[0]], run_id)
    bar.close()
    return failed


def _summary(
    store: Store,
    run_id: str,
    resources: FeedbackResources,
    began: float,
    states: dict[str, str],
    tracer: Tracer,
    graph: Any,
    failed: dict[str, str],
    workers: WorkerReport | None = None,
) -> dict[str, Any]:
    report = store.run_report(run_id)
    unjudged: dict[str, int] = {}  # why no critic could judge -> prompts (judged again next run)
    for pid, state in states.items():
        if state == "unjudged":
            outcome = graph.get_state(thread_config(run_id, pid)).values.get("outcome") or {}
            why = outcome.get("reason", "unscored")
            unjudged[why] = unjudged.get(why, 0) + 1
    signals = resources._signals
    summary = {
        "run_id": run_id,
        "model": policy_ref(resources.settings, convert=False).name,
        "profile": resources.profiles.version,
        **report,
        "unjudged": unjudged,
        "failed": failed,
        "wall_seconds": round(time.perf_counter() - began, 2),
        "stage_seconds": {k: round(v, 3) for k, v in resources.times.seconds.most_common()},
        "critic_usage": store.critic_costs(run_id),
        "reward_model": _reward_model_summary(store, run_id, resources),
        "shared_signals": dict(signals.stats) if signals else {},
        "candidates_from": candidates_from(resources),
        "endpoints": _endpoint_summary(),
        "database": str(store.path),
    }
    missing = signals.likelihood_missing if signals else None
    if workers is not None:  # what the workers did, added to what this process did
        times = resources.times.seconds + workers.stage_seconds
        summary["stage_seconds"] = {k: round(v, 3) for k, v in times.most_common()}
        summary["shared_signals"] = dict(
            Counter(summary["shared_signals"]) + workers.shared_signals
        )
        for url, counts in workers.endpoints.items():
            mine = summary["endpoints"].setdefault(url, {"requests": 0, "peak_in_flight": 0})
            mine["requests"] += counts["requests"]
            mine["peak_in_flight"] = max(mine["peak_in_flight"], counts["peak_in_flight"])
        missing = missing or workers.likelihood_missing
    if missing:
        summary["likelihood"] = f"coherence ran without the policy's likelihood ({missing})"
    if tracer.enabled:
        summary["langsmith"] = {
            "project": tracer.project,
            "url": tracer.host_url(),
            "errors": tracer.errors + (workers.trace_errors if workers else 0),
        }
        unsent = tracer.unsent + (workers.trace_unsent if workers else 0)
        if unsent:  # still queued when the run ended: the traces miss them
            summary["langsmith"]["unsent"] = unsent
    return summary


def candidates_from(r: FeedbackResources) -> str:
    """Who wrote the run's candidates, in words: the teacher, a policy server (with the name
    it was asked for: the promoted adapter's version, or the base model's), or this process."""
    settings = r.settings
    if r.load_teacher is not None and r.teacher_role in ("candidates", "both"):
        return f"the teacher {settings.teacher.model}"
    name = policy_ref(settings, convert=False).name
    adapter = f" with adapter {r.adapter_version}" if r.adapter_version else ""
    if settings.policy.base_url:
        asked = r.adapter_version or settings.policy.request_name
        return f"{settings.policy.base_url} as {asked!r} ({name}{adapter})"
    return f"this process: {name}{adapter}"


def _endpoint_summary() -> dict[str, dict[str, Any]]:
    """Each served endpoint's requests and the most in flight at once, this process so far."""
    return {
        url: {"requests": limit.requests, "peak_in_flight": limit.peak_in_flight}
        for url, limit in endpoint_limits().items()
    }


def _reward_model_summary(
    store: Store, run_id: str, resources: FeedbackResources
) -> dict[str, Any]:
    """Which policy routed the run's decisions, and whether people's agreement drifted."""
    learned = resources.calibrated
    out: dict[str, Any] = {
        "version": learned.version if learned else None,
        "decisions": store.decision_models(run_id),
    }
    if learned:
        out.update(threshold=learned.threshold, target=learned.target, risk=learned.risk)
    try:
        out["drift"] = drift_flags(store, resources.profiles, resources.critics)
    except Exception:  # noqa: BLE001 - a monitoring failure must not fail the nightly run
        log.warning("could not check drift", exc_info=True)
        out["drift"] = {"error": "drift check failed (see the log)"}
    return out
