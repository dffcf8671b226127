"""The scripted OpenAI-compatible server, able to fail as a busy one does: ``fail_next(status,
times, retry_after)`` makes the next chat requests answer ``status`` (a 429 with
``Retry-After``, a 503) before the script answers again; ``arrivals`` keeps when each request
came (``time.monotonic()``), for waits measured at the server.

    with FlakyOpenAIServer(fake_judge(score)) as server:
        server.fail_next(429, retry_after=1)
"""

from __future__ import annotations

import time
from typing import Any

from .openai_server import FakeOpenAIServer


class FlakyOpenAIServer(FakeOpenAIServer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.arrivals: list[float] = []

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self._lock:
            self.failures += [(status, headers)] * times

    def handle(self, path: str, body: dict[str, Any]) -> tuple:
        with self._lock:
            self.arrivals.append(time.monotonic())
            failure = self.failures.pop(0) if self.failures else None
        if failure:
            status, headers = failure
            return status, {"error": {"message": f"fake server answers {status}"}}, headers
        return super().handle(path, body)
