"""A reward-model server on 127.0.0.1 speaking vLLM's pooling API (``POST /pooling`` with chat
``messages``, answered ``{"data": [{"index": 0, "object": "pooling", "data": [score]}]}``), so
the served reward-model path runs over real HTTP. ``score(messages)`` computes the reward: in
the tests, a real (tiny) reward model loaded in the server.

    with PoolingServer(score) as server:
        spec = RewardModelSpec(name="served", url=server.base_url, served_model="tiny")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .json_server import JSONServer


class PoolingServer(JSONServer):
    def __init__(self, score: Callable[[list[dict[str, str]]], float], status: int = 200):
        super().__init__()
        self.score = score
        self.status = status

    @property
    def base_url(self) -> str:
        return self.root_url

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path != "/pooling":
            return 404, {"object": "error", "message": "Not Found"}
        if self.status != 200:
            return self.status, {"object": "error", "message": "overloaded"}
        value = self.score(body["messages"])
        return 200, {
            "id": f"pool-{len(self.requests)}",
            "object": "list",
            "created": int(time.time()),
            "model": body.get("model", "served"),
            "data": [{"index": 0, "object": "pooling", "data": [value]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
