"""Tracing: every graph invocation recorded locally, and sent to LangSmith when it is on.

    LANGSMITH_TRACING=true LANGSMITH_API_KEY=... criticloop graph run
    criticloop traces RUN [PROMPT]          # the local record, LangSmith on or off

Each ``invoke`` of a prompt's thread is a trace: a row in ``traces`` whose id is also the
LangSmith root run id, and a row in ``spans`` per node with its seconds, inputs and the update
it returned (:func:`span_node` wraps the nodes). With the standard LangSmith variables the same
invocation goes to LangSmith through an explicit client (metadata: the criticloop run, prompt,
adapter, critic and profile versions); the client is built quiet and bounded, with runtime and
environment details left out, so a dead endpoint costs seconds, never the run. People's
decisions reach LangSmith as feedback on the trace where the critics judged the case, through
the store's outbox (:func:`post_feedback`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..settings import Settings
from ..store import Store, now
from ._nodethreads import node_threads

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.runtime import Runtime

log = logging.getLogger(__name__)

_CURRENT_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "criticloop_trace", default=None
)

TRACE_KEY = "criticloop_trace"
"""Metadata key carrying the trace id down to the nodes (and into LangSmith)."""

MAX_TEXT = 1500
"""Texts longer than this are shortened in span records (the store keeps them whole)."""

FLUSH_IDLE_SECONDS = 10.0
"""How long a run's end waits for LangSmith to take more of what is queued before it gives up."""

FLUSH_MAX_SECONDS = 120.0
"""The most a run's end waits for LangSmith, however steadily the queue drains."""

DURABILITY = "exit"
"""When an invoke writes its thread's checkpoint: as it ends (done, waiting at an interrupt, or
failed with the steps that succeeded kept), not after every step. A checkpoint costs about as
much as the rest of the orchestration (10 of 34 ms of CPU a prompt, ``bench/scale.py``), and
what a step does lives in the store anyway: a killed thread starts again from its last
checkpoint and finds its candidates, revisions and critiques there, so no model or judge is
asked twice (``feedback.prepare``); what it repeats is local work."""


class Tracer:
    """Starts and finishes traces; owns the LangSmith client when tracing is on."""

    def __init__(self, settings: Settings, metadata: dict[str, Any] | None = None):
        self.settings = settings
        self.metadata = dict(metadata or {})
        self.enabled = bool(settings.langsmith_tracing)
        self.project = settings.langsmith_project
        self.errors = 0
        self.unsent = 0  # LangSmith operations still queued when the run ended
        self._client: Any = None

    # ---- LangSmith --------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            self._client = langsmith_client(self.settings, on_error=self._count_error)
        return self._client

    def _count_error(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            log.warning("LangSmith tracing failed (the run goes on): %s", str(exc)[:200])

    def host_url(self) -> str | None:
        if not self.enabled:
            return None
        from langsmith.utils import get_host_url

        return get_host_url(None, self.client().api_url)

    def flush(self) -> None:
        """Send what is queued for LangSmith: for as long as the queue keeps draining (at most
        ``FLUSH_MAX_SECONDS``), giving up once ``FLUSH_IDLE_SECONDS`` pass without progress.
        What is left is counted in ``unsent`` and logged, never dropped in silence."""
        if self._client is None:
            return
        deadline = time.monotonic() + FLUSH_MAX_SECONDS
        left = self._queued()
        try:
            while True:
                wait = min(FLUSH_IDLE_SECONDS, deadline - time.monotonic())
                self._client.flush(timeout=max(0.0, wait))
                before, left = left, self._queued()
                if not left or left >= before or time.monotonic() >= deadline:
                    break
        except Exception as exc:  # noqa: BLE001 - tracing never breaks a run
            self._count_error(exc)
            left = self._queued()
        if left:
            self.unsent += left
            log.warning(
                "%d LangSmith operations were not sent before the run ended (%s)",
                left,
                self.settings.langsmith_endpoint or "LangSmith",
            )

    def _queued(self) -> int:
        """Run operations still waiting in the LangSmith client's queue."""
        queue = getattr(self._client, "tracing_queue", None)
        return getattr(queue, "unfinished_tasks", 0) if queue is not None else 0

    # ---- invocations -------------------------------------------------------------------------

    def invoke(
        self,
        graph: Any,
        value: Any,
        config: dict[str, Any],
        store: Store,
        *,
        run_id: str,
        prompt_id: str,
        kind: str,
        context: Any = None,
    ) -> Any:
        """``graph.invoke(value, config, context=context)`` as one trace of kind ``kind``
        (start, continue, restart, resume, rewind, budget); ``context``: the graph's resources."""
        trace_id = str(uuid.uuid4())
        config = {
            **config,
            "run_id": trace_id,
            "metadata": {**config.get("metadata", {}), **self.metadata, TRACE_KEY: trace_id},
        }
        config["tags"] = [*config.get("tags", []), kind]
        if self.enabled:
            try:
                from langchain_core.tracers import LangChainTracer

                tracer = LangChainTracer(client=self.client(), project_name=self.project)
                config["callbacks"] = [*config.get("callbacks", []), tracer]
            except Exception as exc:  # noqa: BLE001
                self._count_error(exc)
        store.start_trace(trace_id, run_id, prompt_id, kind, self.project if self.enabled else None)
        began = time.perf_counter()
        try:
            with node_threads():
                result = graph.invoke(value, config, context=context, durability=DURABILITY)
        except BaseException as exc:
            store.finish_trace(trace_id, "failed", time.perf_counter() - began, _error(exc))
            raise
        # An invoke that stops at an interrupt says so in its result (no state read needed)
        waiting = isinstance(result, dict) and bool(result.get("__interrupt__"))
        store.finish_trace(trace_id, "waiting" if waiting else "done", time.perf_counter() - began)
        return result


def langsmith_client(settings: Settings, on_error: Callable[[Exception], None] | None = None):
    """A LangSmith client that is quiet (failures counted, not printed), bounded (short
    timeouts, one retry, daemon threads) and discreet (no runtime or environment metadata)."""
    os.environ.setdefault("LANGSMITH_USE_DAEMON", "true")  # read when the client starts
    logging.getLogger("langsmith").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=".*without session_id.*")
    from langsmith import Client
    from urllib3.util.retry import Retry

    key = settings.langsmith_api_key
    return Client(
        api_url=settings.langsmith_endpoint,
        api_key=key.get_secret_value() if key else None,
        timeout_ms=(3_000, 10_000),
        retry_config=Retry(total=1, backoff_factor=0.2),
        omit_traced_runtime_info=True,
        tracing_error_callback=on_error,
    )


# ---- spans -------------------------------------------------------------------------------------


def span_node(name: str, fn: Callable[[dict, Runtime], dict], stage: str) -> Callable:
    """Wrap a node ``fn(state, runtime)`` so each execution is timed and recorded as a span of
    its trace. The run's context (``runtime.context``, the graph's resources) holds where both
    go: ``.times``, the seconds per ``stage``; ``.stores``, the store of the spans."""

    # Not functools.wraps: LangGraph reads the signature (through __wrapped__) to decide
    # whether to pass ``config`` and ``runtime``, and this wrapper needs them.
    def node(state: dict, config: RunnableConfig, runtime: Runtime) -> dict:
        resources = runtime.context
        started, began = now(), time.perf_counter()
        outputs, error = None, None
        trace_id = (config.get("metadata") or {}).get(TRACE_KEY)
        token = _CURRENT_TRACE.set(trace_id)
        try:
            outputs = fn(state, runtime)
            return outputs
        except BaseException as exc:
            error = _error(exc)
            raise
        finally:
            _CURRENT_TRACE.reset(token)
            seconds = time.perf_counter() - began
            resources.times.add(stage, seconds)
            if trace_id:
                try:
                    resources.stores.get().record_span(
                        trace_id, name, started, seconds, brief(state), shorten(outputs), error
                    )
                except Exception:  # noqa: BLE001 - a span is a record of work, not the work
                    log.exception("could not record the span of node %s", name)

    node.__name__ = name
    return node


def current_trace() -> str | None:
    """The trace the node running on this thread belongs to (None outside a traced node)."""
    return _CURRENT_TRACE.get()


def brief(state: dict[str, Any]) -> dict[str, Any]:
    """What a node read, short: the candidates (texts shortened) and the routing so far."""
    out: dict[str, Any] = {"prompt_id": state.get("prompt_id")}
    if state.get("candidates"):
        out["candidates"] = [
            {"id": c["id"], "source": c["source"], "text": _cut(c["text"], 300)}
            for c in state["candidates"]
        ]
    for key in ("revisions", "pending_revision"):
        if state.get(key):
            out[key] = state[key]
    if state.get("decision"):
        out["decision"] = {k: state["decision"].get(k) for k in ("route", "reason")}
    return out


def shorten(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_TEXT)
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shorten(v) for v in value]
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _error(exc: BaseException) -> str:
    if type(exc).__name__ == "GraphInterrupt":
        return "interrupted: waiting for a person"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# ---- feedback ----------------------------------------------------------------------------------


def post_feedback(settings: Settings, store: Store, client: Any = None, limit: int = 200) -> dict:
    """Send the outbox's pending feedback to LangSmith; returns counts. Does nothing (and
    sends nothing) unless LangSmith is configured: tracing on, or an API key or endpoint."""
    pending = store.pending_feedback(limit)
    if not pending:
        return {"sent": 0, "failed": 0, "pending": 0}
    if client is None:
        if not (settings.langsmith_tracing or settings.langsmith_api_key):
            return {"sent": 0, "failed": 0, "pending": len(pending)}
        client = langsmith_client(settings)
    sent = failed = 0
    for row in pending:
        body = row["body"]
        try:
            if row["op"] == "delete":
                _delete_feedback(client, body["id"])
            else:
                # No trace_id: with it the client may queue the feedback for a background
                # batch, and the outbox could not know whether it arrived.
                client.create_feedback(
                    run_id=row["trace_id"],
                    key=row["key"],
                    score=body.get("score"),
                    value=body.get("value"),
                    comment=body.get("comment"),
                    correction=body.get("correction"),
                    source_info=body.get("source_info"),
                    feedback_id=row["id"],
                    stop_after_attempt=1,
                )
        except Exception as exc:  # noqa: BLE001 - kept in the outbox and tried again later
            store.mark_feedback(row["id"], f"{type(exc).__name__}: {str(exc)[:300]}")
            failed += 1
        else:
            store.mark_feedback(row["id"])
            sent += 1
    return {"sent": sent, "failed": failed, "pending": len(store.pending_feedback(limit))}


def _delete_feedback(client: Any, feedback_id: str) -> None:
    from langsmith.utils import LangSmithNotFoundError

    try:
        client.delete_feedback(feedback_id)
    except LangSmithNotFoundError:
        pass  # already gone
