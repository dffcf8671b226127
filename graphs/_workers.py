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

A worker that dies, or fails outside any one prompt, stops the run: the others take no more
prompts and finish the ones they hold, the run is recorded as failed, and the next
``graph run`` continues it from the checkpoints. When the run's process dies its workers exit
at once, as its own threads would: a kill leaves the same state with workers as without.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agents import endpoint_limits
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
    trace_unsent: int = 0

    def add(self, stats: dict[str, Any]) -> None:
        self.stage_seconds.update(stats["stage_seconds"])
        self.shared_signals.update(stats["shared_signals"])
        self.likelihood_missing = self.likelihood_missing or stats["likelihood_missing"]
        for url, counts in stats["endpoints"].items():
            mine = self.endpoints.setdefault(url, {"requests": 0, "peak_in_flight": 0})
            mine["requests"] += counts["requests"]
            mine["peak_in_flight"] += counts["peak_in_flight"]  # at most the sum of the peaks
        self.trace_errors += stats["trace_errors"]
        self.trace_unsent += stats.get("trace_unsent", 0)


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
    state: dict[str, Any],
    prompt_ids: Sequence[str],
    workers: int,
    concurrency: int,
    on_result: Callable[[str, str, str | None], None],
) -> WorkerReport:
    """Judge ``prompt_ids`` in ``workers`` spawned processes sharing ``concurrency`` threads;
    call ``on_result(prompt_id, state, why_failed)`` as each one is done. ``state`` is what the
    run fixed when it began (see :func:`run_state`), so every worker judges with the same
    versions. Raises WorkerDied when a worker exits or fails before its share is done."""
    workers = max(1, min(workers, concurrency))
    context = multiprocessing.get_context("spawn")  # never fork a process holding threads
    tasks: Any = context.Queue()
    results: Any = context.Queue()
    stop = context.Event()  # set: take no more prompts, finish the ones held
    threads = [concurrency // workers + (i < concurrency % workers) for i in range(workers)]
    for pid in prompt_ids:
        tasks.put(pid)
    for _ in range(concurrency):
        tasks.put(None)  # one stop for each thread
    mine = worker_settings(settings.model_copy(update={"concurrency": concurrency}), workers)
    level = logging.getLogger("criticloop").getEffectiveLevel()
    procs = [
        context.Process(
            target=_worker,
            args=(i, mine, run_id, state, threads[i], tasks, results, stop, level),
            name=f"criticloop-judge-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    report, done = WorkerReport(), set()
    try:
        while len(done) < workers:
            # A worker that said it was done may still exit badly (a library's thread at
            # exit): only one that had not is a death. Checked between results too: the others
            # may go on answering while one is dead.
            dead = [p for i, p in enumerate(procs) if p.exitcode and i not in done]
            if dead:
                raise WorkerDied(
                    f"judging worker {dead[0].name} died (exit {dead[0].exitcode}); "
                    "the next `criticloop graph run` continues the run"
                )
            try:
                kind, worker, *rest = results.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "result":
                on_result(*rest)
            elif kind == "done":
                report.add(rest[0])
                done.add(worker)
            else:  # "fatal": a failure that is not one prompt's
                raise WorkerDied(f"judging worker {procs[worker].name} failed: {rest[0]}")
    finally:
        stop.set()
        _drain_and_join(procs, results, on_result, grace_s=0 if len(done) == workers else 120)
        tasks.cancel_join_thread()
    return report


def _drain_and_join(procs: list, results: Any, on_result: Callable, grace_s: float) -> None:
    """Wait up to ``grace_s`` for the workers to finish the prompts they hold (their results
    still count), then stop any left. A prompt cut off here is one the next run continues."""
    deadline = time.monotonic() + grace_s
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        try:
            kind, _, *rest = results.get(timeout=0.2)
        except queue.Empty:
            continue
        if kind == "result":
            on_result(*rest)
    for proc in procs:
        proc.join(timeout=10 if grace_s == 0 else 0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def run_state(resources: Any) -> dict[str, Any]:
    """What a run fixed when it began and its workers must judge with, not re-read: the
    profiles, the generation config (the adapter's version is in it) and the escalation
    policy of the active reward model."""
    return {
        "profiles": resources.profiles,
        "sampling": resources.sampling,
        "candidates": resources.candidates,
        "config_hash": resources.config_hash,
        "calibrated": resources.calibrated,
    }


def _worker(
    index: int,
    settings: Settings,
    run_id: str,
    state: dict[str, Any],
    threads: int,
    tasks: Any,
    results: Any,
    stop: Any,
    log_level: int,
) -> None:
    """One judging worker: the run's graph with critics of its own, ``threads`` prompts at a
    time, until the queue says stop, the run says stop, or the run's process is gone."""
    _exit_with_parent()
    logger = logging.getLogger("criticloop")  # as the CLI logs: one line a message
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("criticloop: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(log_level)
    logger.propagate = False
    try:
        report = _work(settings, run_id, state, threads, tasks, results, stop, index)
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which stops the run
        log.debug("judging worker failed", exc_info=True)
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        results.put(("fatal", index, f"{type(exc).__name__}: {first}".rstrip(": ")))
        return
    results.put(("done", index, report))


def _exit_with_parent() -> None:
    """Exit the moment the run's process does (its threads would have died with it): a worker
    left running would go on writing threads that the next run is continuing."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)  # no cleanup: as a kill would; SQLite keeps what was committed

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _work(
    settings: Settings,
    run_id: str,
    state: dict[str, Any],
    threads: int,
    tasks: Any,
    results: Any,
    stop: Any,
    index: int,
) -> dict[str, Any]:
    from ._resources import _prompt_fault, _why, make_resources
    from ._threads import advance, open_checkpointer, trace_metadata
    from .feedback import ThreadStores, build_feedback_graph
    from .tracing import Tracer

    stores = ThreadStores(settings.db_path)
    resources = make_resources(
        settings, stores, state["profiles"], state["sampling"], state["candidates"]
    )
    if resources.config_hash != state["config_hash"]:  # e.g. an adapter promoted meanwhile
        raise WorkerDied(
            "the policy or its adapter changed since the run began (generation config "
            f"{state['config_hash']} -> {resources.config_hash})"
        )
    if resources.load_teacher is not None:
        resources._teacher = resources.load_teacher()
    resources.calibrated = state["calibrated"]
    store = stores.get()
    checkpointer = open_checkpointer(settings)
    graph = build_feedback_graph(resources, checkpointer)
    tracer = Tracer(settings, trace_metadata(store.get_run(run_id), resources))
    failed: list[BaseException] = []

    def loop() -> None:
        try:
            while not failed and not stop.is_set():
                try:
                    pid = tasks.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if pid is None:
                    return
                try:
                    where = advance(graph, tracer, resources, run_id, pid)
                except Exception as exc:  # noqa: BLE001 - one prompt's failure quarantines it
                    if not _prompt_fault(exc):
                        raise
                    why = f"judging failed: {_why(exc)}"
                    log.warning("prompt %s failed and is set aside: %s", pid, _why(exc))
                    stores.get().record_prompt_failure(pid, "judge", why, run_id)
                    results.put(("result", index, pid, "failed", why))
                else:
                    results.put(("result", index, pid, where, None))
        except BaseException as exc:  # noqa: BLE001 - the run's failure: the worker reports it
            failed.append(exc)

    pool = [threading.Thread(target=loop, name=f"feedback-{i}") for i in range(threads)]
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    except BaseException:  # Ctrl-C: the threads take no more prompts, finish theirs
        stop.set()
        for thread in pool:
            thread.join()
        raise
    finally:
        tracer.flush()
        stores.close()
        checkpointer.conn.close()
    if failed:
        raise failed[0]
    signals = resources._signals
    return {
        "stage_seconds": dict(resources.times.seconds),
        "shared_signals": dict(signals.stats) if signals else {},
        "likelihood_missing": signals.likelihood_missing if signals else None,
        "endpoints": {
            url: {"requests": lim.requests, "peak_in_flight": lim.peak_in_flight}
            for url, lim in endpoint_limits().items()
        },
        "trace_errors": tracer.errors,
        "trace_unsent": tracer.unsent,
    }
