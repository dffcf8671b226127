"""CrewAI pieces that need ``crewai`` imported (so only the crew backend imports this module).

- :class:`BundledLLM`: a CrewAI ``BaseLLM`` over the bundled SmolLM2 policy (greedy decoding
  under its chat template), so the crew runs offline. It reports its token counts to CrewAI.
- :class:`PromptCapture`: a CrewAI ``BaseLLM`` that keeps the messages CrewAI's agent executor
  would send and stops there (:class:`Captured`), so a critic learns its agent's exact prompt
  from one kickoff and then calls its LLM directly.
- :func:`client_retries_only`: CrewAI wraps every LLM call in its own rate-limit loop (3
  tries); inside this context the OpenAI client's retries (``judge.max_retries``, honouring
  ``Retry-After``) are the only ones, so a throttled endpoint is asked 1 + max_retries times.
- :class:`JudgeCrew`: a ``Crew`` without CrewAI's task-output database (every kickoff empties and
  rewrites that one shared table, for ``crewai replay``); the critic records each call itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

from crewai import BaseLLM, Crew
from pydantic import PrivateAttr

from ._policy import Sampling


class BundledLLM(BaseLLM):
    policy: Any = None
    max_new_tokens: int = 256

    def call(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str | Any:
        from ._text import parse_verdict

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        conversation = [
            {"role": m.get("role", "user"), "content": str(m.get("content") or "")}
            for m in messages
        ]
        sampling = Sampling(self.max_new_tokens, 0.0, 1.0, 0)
        (candidate,) = next(self.policy.generate([("judge", conversation, [0])], sampling, 1))
        self._track_token_usage_internal(
            {
                "prompt_tokens": candidate.prompt_tokens,
                "completion_tokens": candidate.completion_tokens,
                "total_tokens": candidate.prompt_tokens + candidate.completion_tokens,
            }
        )
        if response_model is not None:
            verdict = parse_verdict(candidate.text, response_model)
            if verdict is not None:
                return verdict  # CrewAI takes a model instance as the structured output
        return candidate.text

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 8192

    def get_input_tokens_count(
        self, messages: Any, tools: Any = None, response_model: Any = None
    ) -> int:
        return 0  # counted exactly when the call runs


class Captured(Exception):  # noqa: N818 - a result carried by an exception, not an error
    """The first LLM call of a kickoff (raised by :class:`PromptCapture`): its messages,
    response model and stop words."""

    def __init__(self, messages: list[dict[str, Any]], response_model: Any, stop: list[str]):
        super().__init__("prompt captured")
        self.messages, self.response_model, self.stop = messages, response_model, stop


class PromptCapture(BaseLLM):
    """Answers no call: raises :class:`Captured` with what CrewAI asked, before any request."""

    def call(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str | Any:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        # The executor's stop words apply to this call only (CrewAI's call_stop_override)
        raise Captured([dict(m) for m in messages], response_model, list(self.stop_sequences))

    def supports_function_calling(self) -> bool:
        return False


class _NoTaskLog:
    """Stands where CrewAI's ``TaskOutputStorageHandler`` would: keeps nothing."""

    def update(self, task_index: int, log: dict[str, Any]) -> None:
        pass

    def add(self, *args: Any, **kwargs: Any) -> None:
        pass

    def reset(self) -> None:
        pass

    def load(self) -> None:
        return None


class JudgeCrew(Crew):
    _task_output_handler: Any = PrivateAttr(default_factory=_NoTaskLog)


@contextlib.contextmanager
def client_retries_only():
    """CrewAI's rate-limit loop off for the calls made inside (it skips itself when its context
    variable says a loop is already running). Where a CrewAI release drops that variable, the
    loop stays on: calls still work, with more retries."""
    from crewai.llms import retry

    active = getattr(retry, "_active_llm_rate_limit_retry", None)
    if active is None:
        yield
        return
    token = active.set(True)
    try:
        yield
    finally:
        active.reset(token)


@contextlib.contextmanager
def stop_words(llm: Any, stop: list[str]):
    """The agent executor's stop words on ``llm`` for the calls made inside, as its own call
    would have them (CrewAI's ``call_stop_override``: the LLM object is not changed)."""
    from crewai.llms.base_llm import call_stop_override

    own = list(getattr(llm, "stop", None) or [])
    if not stop or not isinstance(llm, BaseLLM) or set(stop) <= set(own):
        yield
        return
    with call_stop_override(llm, list(dict.fromkeys(own + stop))):
        yield
