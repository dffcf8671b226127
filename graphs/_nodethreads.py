"""LangGraph's node threads, kept from one invoke to the next.

LangGraph runs the tasks of a step with several nodes (the critics after ``prepare``) on a
thread pool it builds for each invoke (``BackgroundExecutor``, through langchain-core's
``get_executor_for_config``) and shuts down when the invoke ends. A prompt's invoke so started
and joined three or four threads: with constant critics, about a fifth of the orchestrator's
CPU a prompt (``bench/RESULTS.md``). LangGraph has no setting for its executor, so criticloop's
own invokes (:meth:`~criticloop.graphs.tracing.Tracer.invoke`) give it one pool for the
process instead, through a context variable; every other invoke keeps LangGraph's own.

The pool grows to what is asked of it at once and its threads wait for the next task, up to
:data:`MAX_THREADS`: so high that a task waiting on another (a nested invoke, a checkpoint
write after the one before) always finds a thread. If a LangGraph release moves the function
replaced here, invokes use LangGraph's pools again: slower, the same results. A forked child
builds a pool of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger(__name__)

MAX_THREADS = 1024
"""The pool's ceiling: never reached by a run (c prompts x their parallel nodes, plus one
checkpoint write each), there only so a runaway cannot start threads without end."""

_SHARED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "criticloop_node_threads", default=False
)
_lock = threading.Lock()
_pool: Executor | None = None
_installed: bool | None = None  # None: not tried yet; False: LangGraph had nothing to replace


@contextlib.contextmanager
def node_threads() -> Iterator[None]:
    """Within this block, LangGraph invokes started from this thread run their nodes on the
    process's pool (:func:`pool`) rather than on threads of their own."""
    token = _SHARED.set(_install())
    try:
        yield
    finally:
        _SHARED.reset(token)


def pool() -> Executor:
    """The process's pool of node threads, built on first use."""
    global _pool
    with _lock:
        if _pool is None:
            from langchain_core.runnables.config import ContextThreadPoolExecutor

            _pool = ContextThreadPoolExecutor(MAX_THREADS, thread_name_prefix="langgraph-node")
        return _pool


def _forget_after_fork() -> None:
    """A forked child has none of the pool's threads, only its count of idle ones: it would
    wait on tasks that no thread takes. The child builds its own pool when it needs one."""
    global _lock, _pool
    _lock = threading.Lock()
    _pool = None


os.register_at_fork(after_in_child=_forget_after_fork)


def _install() -> bool:
    """Route LangGraph's executor through :func:`_executor_for_config`, once a process."""
    global _installed
    with _lock:
        if _installed is None:
            try:
                from langgraph.pregel import _executor

                original = _executor.get_executor_for_config
            except (ImportError, AttributeError) as exc:
                log.debug("LangGraph keeps its own node threads: %s", exc)
                _installed = False
            else:
                _executor.get_executor_for_config = _executor_for_config(original)
                _installed = True
        return _installed


def _executor_for_config(original: Any) -> Any:
    @contextlib.contextmanager
    def executor_for_config(config: Any) -> Iterator[Executor]:
        if not _SHARED.get():
            with original(config) as executor:
                yield executor
            return
        # LangGraph waits for its own tasks before it leaves; the pool lives on.
        yield pool()

    return executor_for_config
