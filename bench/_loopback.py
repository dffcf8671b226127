"""Loopback OpenAI-compatible servers for the load benchmark (``bench/scale.py``): not models,
fixed cheap texts after a configurable sleep, so the orchestrator is what gets measured.

    .venv/bin/python bench/_loopback.py --latency-ms 200     # prints {"policy": URL, "judge": URL}

Two threaded HTTP servers in this process (run it apart from the orchestrator, so its CPU is
not the orchestrator's):

- the policy: ``GET /v1/models``; ``POST /v1/chat/completions`` with ``n`` choices (content,
  ``finish_reason``, ``token_ids``, ``usage``), each text unique to its prompt so the
  orchestrator's embedding caches do not flatter it; no ``/tokenize`` (404), so the coherence
  critic runs without the served likelihood, as against OpenAI's own API. With
  ``--likelihood``, as vLLM: ``POST /tokenize`` (a count of words, at once) and prompt
  log-probabilities on a chat completion that continues the last message (after the latency,
  as a forward pass would be), so the coherence critic asks for each reply's likelihood;
- the judge: ``POST /v1/chat/completions`` answering a valid verdict for the fenced responses
  in the request (pairwise or single), scoring longer texts higher, so pairs are decided the
  same way in both orders.

Each server counts requests and the most in flight at once: ``GET /stats`` (``?reset=1``
zeroes them after reading).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POLICY_NAME = "SmolLM2-135M-Instruct"
_FENCED = re.compile(r"<<<(RESPONSE(?: [AB])?) (\w+)>>>\n(.*?)\n<<<END \1 \2>>>", re.S)
_LAST_USER = re.compile(r"\(case ([\w-]+)\)")


class Counter:
    """Requests and in-flight requests of one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.in_flight = self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def read(self, reset: bool) -> dict[str, int]:
        with self.lock:
            out = {"requests": self.requests, "peak_in_flight": self.peak}
            if reset:
                self.requests, self.peak = 0, self.in_flight
        return out


def candidate_texts(case: str, n: int) -> list[str]:
    """The policy's answers for prompt ``case``: the first long and specific, the others short."""
    good = (
        f"For case {case}, start by checking what you have. First, list the parts and the tools "
        f"you need. Second, work through the steps in order and test each one before going on. "
        f"Finally, note what worked for case {case} so the next attempt is faster."
    )
    short = (
        "It depends on the details of case {case}. Try the usual steps and see what changes. "
        "Ask again if it still does not work ({i})."
    )
    return [good] + [short.format(case=case, i=i) for i in range(1, n)]


def policy_reply(body: dict[str, Any]) -> dict[str, Any]:
    user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    found = _LAST_USER.search(user)
    texts = candidate_texts(
        found.group(1) if found else str(abs(hash(user)) % 10**8), body.get("n") or 1
    )
    choices = [
        {
            "index": i,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
            "token_ids": list(range(len(text.split()))),
        }
        for i, text in enumerate(texts)
    ]
    completion = sum(len(c["token_ids"]) for c in choices)
    return _completion(body, choices, 40, completion)


def _words(messages: list[dict[str, Any]]) -> list[int]:
    """The conversation as the loopback's tokens: one per word, 3 per turn, 2 to open."""
    ids = [1, 2]
    for m in messages:
        ids += [3, 4, 5] + [zlib.crc32(w.encode()) % 50_000 for w in str(m["content"]).split()]
    return ids


def tokenize_reply(body: dict[str, Any]) -> dict[str, Any]:
    ids = _words(body.get("messages") or [])
    return {"count": len(ids), "tokens": ids, "max_model_len": 8192}


def scored_reply(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's answer to ``prompt_logprobs`` with ``continue_final_message``: the prompt's
    token ids and, for each but the first, a log-probability fixed by its id."""
    ids = _words(body["messages"][:-1]) + _words([body["messages"][-1]])[5:]
    scored = [None] + [{str(t): {"logprob": -1.0 - (t % 7) / 10, "rank": 1}} for t in ids[1:]]
    choice = {
        "index": 0,
        "finish_reason": "length",
        "message": {"role": "assistant", "content": "x"},
    }
    return {**_completion(body, [choice], len(ids), 1), "prompt_logprobs": scored,
            "prompt_token_ids": ids}  # fmt: skip


def judge_reply(body: dict[str, Any]) -> dict[str, Any]:
    text = "\n".join(m["content"] for m in body.get("messages", []) if m["role"] == "user")
    fenced = [m.group(3) for m in _FENCED.finditer(text)]
    score = [round(min(10.0, 1.0 + len(t) / 30), 2) for t in fenced]
    if len(score) == 2:
        a, b = score
        verdict: dict[str, Any] = {
            "score_a": a,
            "score_b": b,
            "preferred": "a" if a > b else "b" if b > a else "tie",
            "confidence": 0.9,
            "violation_a": False,
            "violation_b": False,
            "rationale": f"loopback: {a} vs {b}",
        }
    elif score:
        verdict = {"score": score[0], "confidence": 0.9, "rationale": f"loopback: {score[0]}"}
    else:
        verdict = {"score": 5, "confidence": 0.9, "rationale": "loopback"}
    choice = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": json.dumps(verdict)},
    }
    return _completion(body, [choice], 120, 30)


def _completion(body: dict[str, Any], choices: list[dict], prompt: int, completion: int) -> dict:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def serve(
    reply: Any, latency_s: float, models: list[str], likelihood: bool = False
) -> tuple[ThreadingHTTPServer, Counter]:
    counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the clients pool their connections
        disable_nagle_algorithm = True  # as asyncio servers (uvicorn, vLLM): no 40 ms stall

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/stats"):
                return self._send(200, counter.read("reset=1" in self.path))
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "owned_by": "loopback"} for m in models]
                return self._send(200, {"object": "list", "data": data})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if likelihood and self.path == "/tokenize":
                return self._send(200, tokenize_reply(json.loads(raw or b"{}")))
            if not self.path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            counter.enter()
            try:
                if latency_s:
                    time.sleep(latency_s)
                body = json.loads(raw or b"{}")
                if body.get("prompt_logprobs") is not None:
                    if not likelihood:
                        return self._send(400, {"error": {"message": "no prompt logprobs"}})
                    payload = scored_reply(body)
                else:
                    payload = reply(body)
            finally:
                counter.leave()
            self._send(200, payload)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512  # the listen backlog: 64+ clients connecting at once

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Sleep per request.")
    parser.add_argument(
        "--likelihood", action="store_true", help="The policy offers prompt logprobs (vLLM)."
    )
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    policy, _ = serve(policy_reply, latency, [POLICY_NAME], args.likelihood)
    judge, _ = serve(judge_reply, latency, ["loopback-judge"])
    urls = {
        name: "http://{}:{}/v1".format(*httpd.server_address[:2])
        for name, httpd in (("policy", policy), ("judge", judge))
    }
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
