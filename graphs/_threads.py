"""One prompt's LangGraph thread: its checkpointer, its config, and advancing it.

Shared by the run's process (``run.py``), its judging workers (``_workers.py``) and the
reviewer (``review.py``).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from ..settings import Settings
from .feedback import FeedbackResources
from .tracing import Tracer

log = logging.getLogger(__name__)
RUN_KIND = "graph"
"""The kind of run (``runs.kind``) and the tag of its traces."""


def open_checkpointer(settings: Settings):
    """The SQLite checkpointer that keeps graph threads across processes."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.checkpoints_path, check_same_thread=False, timeout=60)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def thread_config(run_id: str, prompt_id: str) -> dict[str, Any]:
    return {
        "configurable": {"thread_id": f"{run_id}/{prompt_id}"},
        "run_name": f"feedback {prompt_id}",
        "tags": ["criticloop", RUN_KIND],
        "metadata": {"run_id": run_id, "prompt_id": prompt_id},
    }


def advance(
    graph: Any, tracer: Tracer, resources: FeedbackResources, run_id: str, prompt_id: str
) -> str:
    """Run (or continue) one prompt's thread as far as it goes, with ``resources`` as the
    runs' context; return where it stands."""
    resources.ready_thread()
    try:
        return _advance(graph, tracer, resources, run_id, prompt_id)
    finally:
        resources.forget(prompt_id)


def _advance(
    graph: Any, tracer: Tracer, resources: FeedbackResources, run_id: str, prompt_id: str
) -> str:
    config = thread_config(run_id, prompt_id)
    start = {"run_id": run_id, "prompt_id": prompt_id, "revisions": 0}
    snapshot = graph.get_state(config)
    if waiting_for_review(snapshot):
        return "escalated"
    stores = resources.stores
    thread = {"run_id": run_id, "prompt_id": prompt_id, "context": resources}  # every invoke's
    if not snapshot.values:
        result = tracer.invoke(graph, start, config, stores.get(), kind="start", **thread)
    elif snapshot.next:
        # A failure stopped it mid-way: continue from the checkpoint.
        result = tracer.invoke(graph, None, config, stores.get(), kind="continue", **thread)
    elif not snapshot.values.get("outcome"):
        # A kill can leave a thread whose last checkpoint has nowhere to go and no outcome.
        # Run it again from the start: every node's records are keyed, so nothing doubles.
        log.warning("thread %s/%s stopped without an outcome; running it again", run_id, prompt_id)
        result = tracer.invoke(graph, start, config, stores.get(), kind="restart", **thread)
    else:
        result = snapshot.values
    if not isinstance(result, dict):  # not the state LangGraph returns: read it
        snapshot = graph.get_state(config)
        if waiting_for_review(snapshot):
            return "escalated"
        result = snapshot.values
    # The invoke's result is the thread's state where it stopped; at an interrupt, it says so.
    if result.get("__interrupt__"):
        return "escalated"
    return (result.get("outcome") or {}).get("outcome", "unfinished")


def waiting_for_review(snapshot: Any) -> bool:
    return any(task.interrupts for task in snapshot.tasks)


def trace_metadata(run: dict[str, Any], resources: FeedbackResources) -> dict[str, Any]:
    """What every trace of a run carries: the run, the model and adapter, the versions."""
    config = run["config"]
    return {
        "criticloop_run": run["id"],
        "model": config.get("model"),
        "adapter": config.get("adapter"),
        "profile_version": resources.profiles.version,
        "critic_versions": dict(config.get("critics") or {}),
        "generation_config": config.get("config_hash"),
    }
