"""A reward-model server on 127.0.0.1 speaking vLLM's pooling API (``POST /pooling`` with chat
``messages``, answered ``{"data": [{"index": 0, "object": "pooling", "data": [score]}]}``), so
the served reward-model path runs over real HTTP. ``score(messages)`` computes the reward: in
the tests, a real (tiny) reward model loaded in the server.

    with PoolingServer(score) as server:
        spec = RewardModelSpec(name="served", url=server.base_url, served_model="tiny")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PoolingServer:
    def __init__(self, score: Callable[[list[dict[str, str]]], float], status: int = 200):
        self.score = score
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                if self.path != "/pooling":
                    return self._send(404, {"object": "error", "message": "Not Found"})
                if server.status != 200:
                    return self._send(server.status, {"object": "error", "message": "overloaded"})
                value = server.score(body["messages"])
                return self._send(
                    200,
                    {
                        "id": f"pool-{len(server.requests)}",
                        "object": "list",
                        "created": int(time.time()),
                        "model": body.get("model", "served"),
                        "data": [{"index": 0, "object": "pooling", "data": [value]}],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> PoolingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
