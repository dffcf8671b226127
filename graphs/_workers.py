"""Judging in worker processes: ``criticloop graph run --workers N``.

One Python process judges a few prompts a second whatever its concurrency: the critics, the
CrewAI judge's kickoff, LangGraph and the store all run under one interpreter lock (on 2 CPUs
the bench measured 160-300 ms of CPU a prompt, so 3-6 prompts/s at c=1 or c=64 alike;
``bench/RESULTS.md``). Workers are that process N times over. The run's own process keeps the
run: it claims it, generates the candidates, then hands the prompts to N spawned workers
through a queue and reads back where each one stands. Each worker builds its own critics,
store connections and checkpointer (the same two SQLite files, which queue writers across
processes), and works on its share of the run's concurrency with threads.

The limits of a served endpoint are per process, so each worker gets 1/N of them (rounded
down, at least one request in flight): N workers never send more than ``MAX_IN_FLIGHT``
requests at once (N, where that is more), nor more than ``REQUESTS_PER_MINUTE`` a minute.

A worker that dies stops the run as the death of the run's process would: the run is
recorded as failed and the next ``graph run`` continues it from the checkpoints. A worker
whose parent died stops taking prompts.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agents import Sampling, endpoint_limits
from ..errors import CriticloopError
from ..settings import Settings

log = logging.getLogger(__name__)
_POLL_S = 1.0


class WorkerDied(CriticloopError):
    """A judging worker exited, or failed outside any one prompt."""


@dataclass
class WorkerReport:
    """What the workers did, summed: for the run's summary."""

    stage_seconds: Counter[str] = field(default_factory=Counter)
    shared_signals: Counter[str] = field(default_factory=Counter)
    likelihood_missing: str | None = None
    endpoints: dict[str, dict[str, int]] = field(default_factory=dict)
    trace_errors: int = 0

    def add(self, stats: dict[str, Any]) -> None:
        self.stage_seconds.update(stats["stage_seconds"])
        self.shared_signals.update(stats["shared_signals"])
        self.likelihood_missing = self.likelihood_missing or stats["likelihood_missing"]
        for url, counts in stats["endpoints"].items():
            mine = self.endpoints.setdefault(url, {"requests": 0, "peak_in_flight": 0})
            mine["requests"] += counts["requests"]
            mine["peak_in_flight"] += counts["peak_in_flight"]  # at most the sum of the peaks
        self.trace_errors += stats["trace_errors"]


def worker_settings(settings: Settings, workers: int) -> Settings:
    """``settings`` for one of ``workers``: its share of the concurrency and endpoint limits."""

    def share(endpoint: Any) -> Any:
        rpm = endpoint.requests_per_minute
        return endpoint.model_copy(
            update={
                "max_in_flight": max(1, endpoint.max_in_flight // workers),
                "requests_per_minute": rpm / workers if rpm else None,
            }
        )

    return settings.model_copy(
        update={
            "policy": share(settings.policy),
            "judge": share(settings.judge),
            "concurrency": math.ceil(settings.concurrency / workers),
        }
    )


def judge_in_workers(
    settings: Settings,
    *,
    run_id: str,
    sampling: Sampling,
    candidates: int,
    config_hash: str,
    prompt_ids: Sequence[str],
    workers: int,
    concurrency: int,
    on_result: Callable[[str, str, str | None], None],
) -> WorkerReport:
    """Judge ``prompt_ids`` in ``workers`` spawned processes of ``concurrency / workers``
    threads each; call ``on_result(prompt_id, state, why_failed)`` as each one is done.
    Raises WorkerDied when a worker exits before its share is done."""
    context = multiprocessing.get_context("spawn")  # never fork a process holding threads
    tasks: Any = context.Queue()
    results: Any = context.Queue()
    for pid in prompt_ids:
        tasks.put(pid)
    threads = math.ceil(concurrency / workers)
    for _ in range(workers * threads):
        tasks.put(None)  # one stop for each thread
    mine = worker_settings(settings.model_copy(update={"concurrency": concurrency}), workers)
    procs = [
        context.Process(
            target=_worker,
            args=(
                mine,
                run_id,
                sampling,
                candidates,
                config_hash,
                threads,
                tasks,
                results,
                os.getpid(),
                logging.getLogger("criticloop").getEffectiveLevel(),
            ),
            name=f"criticloop-judge-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    report, done = WorkerReport(), 0
    try:
        while done < workers:
            gone = [p for p in procs if p.exitcode]  # checked between results too: the
            if gone:  # others may go on answering while one is dead
                raise WorkerDied(
                    f"judging worker {gone[0].name} died (exit {gone[0].exitcode}); "
                    "the next `criticloop graph run` continues the run"
                )
            try:
                kind, *rest = results.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "result":
                on_result(*rest)
            elif kind == "done":
                report.add(rest[0])
                done += 1
            else:  # "fatal": a failure that is not one prompt's
                raise WorkerDied(f"a judging worker failed: {rest[0]}")
    finally:
        for proc in procs:
            proc.join(timeout=10 if done == workers else 0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        tasks.cancel_join_thread()
    return report


def _worker(
    settings: Settings,
    run_id: str,
    sampling: Sampling,
    candidates: int,
    config_hash: str,
    threads: int,
    tasks: Any,
    results: Any,
    parent: int,
    log_level: int,
) -> None:
    """One judging worker: the run's graph with critics of its own, ``threads`` prompts at a
    time, until the queue says stop or the parent is gone."""
    logger = logging.getLogger("criticloop")  # as the CLI logs: one line a message
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("criticloop: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(log_level)
    logger.propagate = False
    try:
        _work(settings, run_id, sampling, candidates, config_hash, threads, tasks, results, parent)
    except BaseException:  # noqa: BLE001 - told to the parent, which stops the run and says why
        log.debug("judging worker failed", exc_info=True)
        results.put(("fatal", traceback.format_exc().strip().splitlines()[-1]))


def _work(
    settings: Settings,
    run_id: str,
    sampling: Sampling,
    candidates: int,
    config_hash: str,
    threads: int,
    tasks: Any,
    results: Any,
    parent: int,
) -> None:
    from ..reward import Profiles
    from ._resources import _prompt_fault, _why, make_resources
    from ._threads import advance, open_checkpointer, trace_metadata
    from .feedback import ThreadStores, build_feedback_graph
    from .routing import active_policy
    from .tracing import Tracer

    stores = ThreadStores(settings.db_path)
    resources = make_resources(
        settings, stores, Profiles.load(settings.profiles), sampling, candidates
    )
    resources.config_hash = config_hash
    if resources.load_teacher is not None:
        resources._teacher = resources.load_teacher()
    store = stores.get()
    resources.calibrated = active_policy(store)
    checkpointer = open_checkpointer(settings)
    graph = build_feedback_graph(resources, checkpointer)
    tracer = Tracer(settings, trace_metadata(store.get_run(run_id), resources))
    fatal: list[BaseException] = []

    def loop() -> None:
        while not fatal and os.getppid() == parent:
            try:
                pid = tasks.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if pid is None:
                return
            try:
                results.put(("result", pid, advance(graph, tracer, resources, run_id, pid), None))
            except Exception as exc:  # noqa: BLE001 - one prompt's failure quarantines it
                if not _prompt_fault(exc):
                    fatal.append(exc)
                    return
                why = f"judging failed: {_why(exc)}"
                log.warning("prompt %s failed and is set aside: %s", pid, _why(exc))
                stores.get().record_prompt_failure(pid, "judge", why, run_id)
                results.put(("result", pid, "failed", why))

    try:
        pool = [threading.Thread(target=loop, name=f"feedback-{i}") for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        if fatal:
            raise fatal[0]
    finally:
        tracer.flush()
        stores.close()
        checkpointer.conn.close()
    signals = resources._signals
    results.put(
        (
            "done",
            {
                "stage_seconds": dict(resources.times.seconds),
                "shared_signals": dict(signals.stats) if signals else {},
                "likelihood_missing": signals.likelihood_missing if signals else None,
                "endpoints": {
                    url: {"requests": lim.requests, "peak_in_flight": lim.peak_in_flight}
                    for url, lim in endpoint_limits().items()
                },
                "trace_errors": tracer.errors,
            },
        )
    )
