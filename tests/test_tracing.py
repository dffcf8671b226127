"""The end of a traced run: what is queued for LangSmith is sent while the endpoint takes it,
and what an endpoint that stops taking it leaves behind is counted, not dropped in silence.

Real parts: the LangSmith client, posting to a sink on 127.0.0.1 that answers slowly.
"""

from __future__ import annotations

import logging

import pytest
from criticloop.graphs import tracing
from criticloop.graphs.tracing import Tracer
from criticloop.settings import Settings
from support.langsmith_sink import LangSmithSink

RUNS = 300  # three of the client's batches of 100


def _traced(sink: LangSmithSink, monkeypatch) -> Tracer:
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", sink.url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "ls-test-key")
    return Tracer(Settings.load(env_file=None))


def _queue_runs(tracer: Tracer) -> set[str]:
    """Root runs as the graph's tracer posts them: with a trace id and dotted order, so the
    client queues them for its background thread rather than posting each in turn."""
    from langsmith.run_trees import RunTree

    ids = set()
    for i in range(RUNS):
        run = RunTree(name=f"node-{i}", inputs={"i": i}, ls_client=tracer.client())
        run.session_name = "flush"
        run.post()
        ids.add(str(run.id))
    return ids


def test_a_slow_endpoint_gets_everything_while_it_keeps_taking_batches(hermetic, monkeypatch):
    """Each batch takes 0.6 s, the three together longer than the wait for progress (1 s):
    one fixed wait sent two batches of three and dropped the third."""
    monkeypatch.setattr(tracing, "FLUSH_IDLE_SECONDS", 1.0)
    with LangSmithSink(delay_s=0.6) as sink:
        tracer = _traced(sink, monkeypatch)
        ids = _queue_runs(tracer)
        tracer.flush()
        assert set(sink.runs()) == ids
    assert tracer.unsent == 0 and tracer.errors == 0


def test_an_endpoint_that_stops_answering_leaves_its_runs_counted_as_unsent(
    hermetic, monkeypatch, caplog
):
    monkeypatch.setattr(tracing, "FLUSH_IDLE_SECONDS", 0.5)
    with LangSmithSink(delay_s=30) as sink:
        tracer = _traced(sink, monkeypatch)
        _queue_runs(tracer)
        with caplog.at_level(logging.WARNING, logger="criticloop.graphs.tracing"):
            tracer.flush()
        assert not sink.runs()
    assert 0 < tracer.unsent <= RUNS
    assert f"{tracer.unsent} LangSmith operations were not sent" in caplog.text
    assert sink.url in caplog.text


def test_flush_without_tracing_does_nothing(settings):
    tracer = Tracer(settings)
    tracer.flush()
    assert tracer.unsent == 0 and tracer._client is None


@pytest.fixture(autouse=True)
def _langsmith_log_level():
    """The tracer quiets the langsmith logger for the process: put its level back."""
    logger = logging.getLogger("langsmith")
    level = logger.level
    yield
    logger.setLevel(level)
