"""LLM judges under load: both orders of a pair at once, each endpoint's limits, the OpenAI
client's retries (``Retry-After`` honoured), a dead endpoint leaving cases unscored with the
status, and each judge call traced to LangSmith as an ``llm`` run with tokens and cost.

Real parts: CrewAI, the OpenAI SDK over HTTP to a scripted server on 127.0.0.1, the LangSmith
client posting to a sink on 127.0.0.1.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from criticloop.agents import Case, build_critic, endpoint_limits, reset_endpoint_limits
from criticloop.agents._crew import CrewCritic, JudgeLLM
from support.flaky_openai_server import FlakyOpenAIServer
from support.langsmith_sink import LangSmithSink
from support.openai_server import USAGE, FakeOpenAIServer, fake_judge

GOOD = "Boil water, lower the egg in, simmer nine minutes, then cool it in cold water and peel."
SHORT = "Eggs."


def longer_is_better(text: str) -> float:
    return min(10.0, len(text) / 9)


def _case(response: str) -> Case:
    return Case("p-egg", "general", (("user", "How do I boil an egg?"),), response)


def _critic(settings, server, **update) -> CrewCritic:
    update = {"base_url": server.base_url, "model": "judge-7b", **update}
    judge = JudgeLLM(settings.judge.model_copy(update=update))
    return CrewCritic("helpfulness", build_critic("helpfulness"), judge)


@pytest.fixture(autouse=True)
def _fresh_limits():
    reset_endpoint_limits()
    yield
    reset_endpoint_limits()


def test_both_orders_of_a_pair_are_judged_at_once(settings):
    """The server answers only when both orders' requests are in it together: judged one
    after the other, the first would wait in vain and the pair come back unscored."""
    both_here = threading.Barrier(2, timeout=20)
    judge = fake_judge(longer_is_better)

    def together(body):
        both_here.wait()
        return judge(body)

    with FakeOpenAIServer(together) as server:
        good, short = _critic(settings, server).compare(_case(GOOD), _case(SHORT)).scores
        limit = endpoint_limits()[server.base_url]
    assert good.score > short.score and good.confidence == pytest.approx(0.9)
    assert limit.peak_in_flight == 2 and limit.requests == 2


def test_judge_calls_wait_on_their_endpoints_limit(settings):
    in_flight, peak, guard = [0], [0], threading.Lock()
    judge = fake_judge(longer_is_better)

    def counted(body):
        with guard:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        threading.Event().wait(0.2)  # long enough for the other order to arrive if let in
        with guard:
            in_flight[0] -= 1
        return judge(body)

    with FakeOpenAIServer(counted) as server:
        critic = _critic(settings, server, max_in_flight=1, requests_per_minute=600)
        judgement = critic.compare(_case(GOOD), _case(SHORT))
        limit = endpoint_limits()[server.base_url]
    assert all(score.scored for score in judgement.scores)
    assert peak[0] == 1 and limit.peak_in_flight == 1 and limit.requests == 2
    assert (limit.max_in_flight, limit.requests_per_minute) == (1, 600)
    # a provider without a base URL has one limit by its name, shared with its other callers
    hosted = JudgeLLM(settings.judge.model_copy(update={"model": "anthropic/claude-x"}))
    assert hosted.limit(SimpleNamespace(provider="anthropic")) is endpoint_limits()["anthropic"]


def test_a_place_freed_at_an_endpoint_goes_to_the_caller_waiting_longest():
    """A loop of requests (the policy's generation threads) gives its place back and asks
    again at once; with a plain semaphore it took the place straight back, and a judge's
    likelihood request to the same server waited until the loop had nothing left to send."""
    from criticloop.agents._endpoints import FairSlots

    slots = FairSlots(1)
    assert slots.acquire()
    holding, checked = threading.Event(), threading.Event()

    def judge_request():
        assert slots.acquire(timeout=20)
        holding.set()
        checked.wait(20)
        slots.release()

    judge = threading.Thread(target=judge_request)
    judge.start()
    while not slots.waiting:  # the judge is in line
        threading.Event().wait(0.01)
    slots.release()
    assert not slots.acquire(timeout=0.2)  # the loop asks again at once: not its turn
    assert holding.wait(5) and not slots.waiting  # the judge has it; the loop gave up its turn
    checked.set()
    judge.join(10)
    assert slots.acquire(timeout=5)  # the place came back
    assert not slots.acquire(timeout=0.05)  # and there is still one only


def test_a_429_waits_as_long_as_retry_after_says(settings):
    with FlakyOpenAIServer(fake_judge(longer_is_better)) as server:
        server.fail_next(429, retry_after=1)
        critic = _critic(settings, server, max_retries=1)
        score = critic(_case(GOOD))
        first, second = server.arrivals
    assert score.scored and critic.calls()[0].ok and critic.calls()[0].attempts == 1
    assert second - first >= 1.0  # the client's own first backoff is at most 0.5 s


def test_a_429_that_persists_is_tried_only_as_often_as_max_retries_says(settings):
    """CrewAI wraps every LLM call in its own 3-try rate-limit loop; on top of the client's
    retries that would ask a throttled endpoint 3 x (1 + max_retries) times."""
    with FlakyOpenAIServer(fake_judge(longer_is_better)) as server:
        server.fail_next(429, times=10, retry_after=0)
        critic = _critic(settings, server, max_retries=1, retries=0)
        score = critic(_case(GOOD))
        asked = len(server.arrivals)
    assert not score.scored and "429" in score.rationale
    assert asked == 2  # the first try and the client's one retry


def test_an_endpoint_that_keeps_failing_leaves_the_pair_unscored_with_the_status(settings):
    def down(body):
        raise RuntimeError("judge host is down")  # the fake server answers 500 with this

    with FakeOpenAIServer(down) as server:
        critic = _critic(settings, server, max_retries=1, retries=2)
        judgement = critic.compare(_case(GOOD), _case(SHORT))
        single = critic(_case(GOOD))
        asked = len(server.requests)
    for score in (*judgement.scores, single):
        assert not score.scored and "Error code: 500" in score.rationale
        assert "judge host is down" in score.rationale
    # each call: one try and the client's one retry; a failed call is not asked again
    assert [c.attempts for c in judgement.calls] == [1, 1] and asked == 3 * 2
    assert all(not c.ok and "500" in c.error for c in judgement.calls)


def test_each_judge_call_is_an_llm_run_with_tokens_and_cost_under_its_node(settings):
    from langsmith import Client, trace, tracing_context

    with FakeOpenAIServer(fake_judge(longer_is_better)) as server, LangSmithSink() as sink:
        client = Client(api_url=sink.url, api_key="ls-test-key")
        critic = _critic(settings, server, model="gpt-4o-mini")  # a priced name
        with tracing_context(enabled=True, client=client, project_name="judges"):
            with trace("critic_helpfulness", "chain") as node:  # as the graph's node is
                critic.compare(_case(GOOD), _case(SHORT))
        client.flush()
        calls = sink.children(str(node.id))
    assert len(calls) == 2 and {c["run_type"] for c in calls} == {"llm"}
    assert sorted(c["metadata"]["order"] for c in calls) == ["ab", "ba"]
    price_in, price_out = settings.judge.prices["gpt-4o-mini"]
    for call in calls:
        usage = call["outputs"]["usage_metadata"]
        assert (usage["input_tokens"], usage["output_tokens"]) == USAGE
        assert usage["total_cost"] == pytest.approx(
            (USAGE[0] * price_in + USAGE[1] * price_out) / 1e6
        )
        assert call["metadata"]["ls_model_name"] == "gpt-4o-mini"
        assert '"score_a"' in call["outputs"]["choices"][0]["message"]["content"]
        assert GOOD in call["inputs"]["messages"][-1]["content"]
