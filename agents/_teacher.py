"""A LangChain chat model as a writer: a stronger teacher that writes revisions (or candidates).

    CRITICLOOP_TEACHER__MODEL=openai:gpt-4o-mini criticloop graph run
    CRITICLOOP_TEACHER__MODEL=qwen2.5-7b CRITICLOOP_TEACHER__BASE_URL=http://gpu-box:8000/v1 ...

Any model ``init_chat_model`` knows ('provider:model'; the provider's LangChain package must be
installed, langchain-openai is), or any OpenAI-compatible endpoint. It sees the same messages the
policy would: the task templates in ``agents/templates/`` (``revise.txt`` for rewrites). It
writes through the same interface as :class:`~criticloop.agents.Policy`, so generations from it
are stored the same way, with its name as the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ConfigError, ModelError
from ..settings import TeacherSettings
from ._models import ModelRef
from ._policy import BatchStats, Candidate, Sampling

NO_KEY = "unused"
"""Sent as the key to an OpenAI-compatible server configured without one: the OpenAI client
refuses to start without a key, and local servers (vLLM, Ollama, llama.cpp) ignore it."""


def chat_model(settings: TeacherSettings) -> Any:
    """The LangChain chat model the settings name (no network call until it is used)."""
    from langchain.chat_models import init_chat_model

    model = settings.model or ""
    kwargs: dict[str, Any] = {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        "max_retries": 2,
    }
    provider = None
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
        if ":" not in model:
            provider = "openai"  # the OpenAI wire format, served by someone else
    if settings.api_key is not None:
        kwargs["api_key"] = settings.api_key.get_secret_value()
    elif settings.base_url:
        import os

        kwargs["api_key"] = os.environ.get("OPENAI_API_KEY") or NO_KEY
    try:
        return init_chat_model(model, model_provider=provider, **kwargs)
    except (ImportError, ValueError) as exc:
        message = str(exc).splitlines()[0]
        raise ConfigError(f"CRITICLOOP_TEACHER__MODEL={model!r}: {message}") from None


class Teacher:
    """Writes candidates with a chat model; duck-types :class:`Policy` for generation."""

    def __init__(self, settings: TeacherSettings, model: Any | None = None):
        if not settings.model:
            raise ConfigError("no teacher model: set CRITICLOOP_TEACHER__MODEL")
        self.settings = settings
        self.model = model if model is not None else chat_model(settings)
        self.ref = ModelRef(name=f"teacher:{settings.model}", source=settings.base_url or "")
        self.adapter_version: str | None = None

    def generate(
        self,
        requests: Sequence[tuple[str, list[dict[str, str]], Sequence[int]]],
        sampling: Sampling,
        batch_size: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> Iterator[list[Candidate]]:
        """One chat call per requested candidate, ``batch_size`` at a time in parallel. The
        teacher's own settings set its temperature and length (``sampling`` is the policy's)."""
        work = [
            (key, index, conversation)
            for key, conversation, indices in requests
            for index in indices
        ]
        for start in range(0, len(work), batch_size):
            batch = work[start : start + batch_size]
            began = time.perf_counter()
            try:
                replies = self.model.batch(
                    [_messages(conversation) for _, _, conversation in batch],
                    config={"max_concurrency": batch_size},
                )
            except Exception as exc:  # noqa: BLE001 - provider errors come in many types
                raise ModelError(f"teacher {self.settings.model!r} failed: {exc}") from None
            seconds = time.perf_counter() - began
            candidates = [
                _candidate(key, index, reply)
                for (key, index, _), reply in zip(batch, replies, strict=True)
            ]
            if on_batch:
                tokens = sum(c.completion_tokens for c in candidates)
                on_batch(BatchStats(len(batch), tokens, seconds))
            yield candidates


def _messages(conversation: list[dict[str, str]]) -> list[tuple[str, str]]:
    roles = {"system": "system", "user": "human", "assistant": "ai"}
    return [(roles[m["role"]], m["content"]) for m in conversation]


def _candidate(key: str, index: int, reply: Any) -> Candidate:
    usage = getattr(reply, "usage_metadata", None) or {}
    finish = (getattr(reply, "response_metadata", None) or {}).get("finish_reason")
    text = reply.content if isinstance(reply.content, str) else _text_of(reply.content)
    return Candidate(
        key=key,
        index=index,
        text=text.strip(),
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        finish_reason="length" if finish in ("length", "max_tokens") else "stop",
    )


def _text_of(blocks: list[Any]) -> str:
    """The text of a content-block reply (Anthropic-style lists)."""
    return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in blocks if b)
