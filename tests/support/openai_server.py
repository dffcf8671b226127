"""A scripted OpenAI-compatible chat server on 127.0.0.1: the real HTTP client path runs
(the OpenAI SDK under CrewAI and LangChain), the replies are exact.

    with FakeOpenAIServer(lambda body: '{"score": 7, ...}') as server:
        settings = Settings.load(env_file=None, judge={"base_url": server.base_url, ...})

``reply(body)`` gets the request's JSON body and returns the assistant's text; ``requests``
keeps every body (and its headers) for assertions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from .json_server import JSONServer

USAGE = (120, 30)
"""Tokens every reply reports (prompt, completion): what cost tests multiply."""


class BadRequest(Exception):
    """Raised by a ``reply`` script: the server answers 400 with this message, as a server does
    for a request it does not support."""


class FakeOpenAIServer(JSONServer):
    def __init__(self, reply: Callable[[dict[str, Any]], str], usage: tuple[int, int] = USAGE):
        super().__init__()
        self.reply = reply
        self.usage = usage
        self.base_url = f"{self.root_url}/v1"

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not path.endswith("/chat/completions"):
            return 404, {"error": {"message": "not found"}}
        try:
            content = self.reply(body)
        except BadRequest as exc:
            return 400, {"error": {"message": str(exc), "type": "invalid_request_error"}}
        except Exception as exc:  # a script bug shows up as a 500 with its message
            return 500, {"error": {"message": repr(exc)}}
        prompt, completion = self.usage
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def prompts(self) -> list[str]:
        """The last user message of every chat request."""
        return [
            next(
                m["content"] for m in reversed(r["body"].get("messages", [])) if m["role"] == "user"
            )
            for r in self.requests
            if r["path"].endswith("/chat/completions")
        ]


_BLOCK = re.compile(r"<<<(RESPONSE(?: [AB])?) (\w+)>>>\n(.*?)\n<<<END \1 \2>>>", re.S)


def fenced_responses(body: dict[str, Any]) -> list[str]:
    """The judged texts in a judge request, in the order the judge sees them."""
    text = "\n".join(m["content"] for m in body.get("messages", []) if m["role"] == "user")
    return [m.group(3) for m in _BLOCK.finditer(text)]


def fake_judge(score: Callable[[str], float], confidence: float = 0.9) -> Callable[[dict], str]:
    """A scripted judge: ``score(text)`` (0-10) for each fenced response, the higher preferred.
    Pairwise or single, by how many responses the request holds; a teacher request (no
    fenced response) gets a fixed rewrite."""

    def reply(body: dict[str, Any]) -> str:
        texts = fenced_responses(body)
        if len(texts) == 2:
            a, b = (round(score(t), 2) for t in texts)
            preferred = "a" if a > b else "b" if b > a else "tie"
            return json.dumps(
                {
                    "score_a": a,
                    "score_b": b,
                    "preferred": preferred,
                    "confidence": confidence,
                    "violation_a": False,
                    "violation_b": False,
                    "rationale": f"scripted: {a} vs {b}",
                }
            )
        if len(texts) == 1:
            s = round(score(texts[0]), 2)
            return json.dumps({"score": s, "confidence": confidence, "rationale": f"scripted: {s}"})
        return "A teacher's answer: clear, specific and complete."

    return reply
