"""A LangSmith API sink on 127.0.0.1 for tests: records the runs and feedback that arrive.

    with LangSmithSink() as sink:            # port 0 -> sink.url
        ... run traced code with LANGSMITH_ENDPOINT=sink.url ...
        client.flush()
        runs = sink.runs()                   # {run_id: merged run dict}
        fb = sink.feedback()                 # list of feedback dicts

info_mode:
  "404"   GET /info -> 404 (client falls back to defaults; logs one WARNING
          "Failed to get info" + one WARNING "Run compression is not enabled").
  "full"  GET /info -> complete batch_ingest_config, version "0.13.0",
          instance_flags.zstd_compression_enabled = zstd (bool). With zstd=True the
          client sends zstd-compressed multipart (Content-Encoding: zstd), and
          create_feedback(trace_id=...) goes through the multipart queue
          ("feedback.<id>" parts) instead of POST /feedback.
multipart=False: /runs/multipart -> 404 (and info says so) -> client uses POST /runs/batch.
fail_status: if set (e.g. 500), every request except GET /info answers it.
delay_s: every request except GET /info waits this long before it is taken (a slow endpoint).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None

_RUN_SIDE_FIELDS = ("inputs", "outputs", "events", "extra", "error", "serialized")


def full_info(zstd: bool = False, multipart: bool = True) -> dict:
    return {
        "version": "0.13.0",
        "license_expiration_time": None,
        "batch_ingest_config": {
            "use_multipart_endpoint": multipart,
            "scale_up_qsize_trigger": 1000,
            "scale_up_nthreads_limit": 16,
            "scale_down_nempty_trigger": 4,
            "size_limit": 100,
            "size_limit_bytes": 20_971_520,
        },
        "instance_flags": {"zstd_compression_enabled": zstd},
    }


def decode_body(body: bytes, content_encoding: str) -> bytes:
    enc = (content_encoding or "").strip().lower()
    if enc == "zstd":
        # frames are written by a streaming compressor (no content size) -> stream_reader
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    if enc == "gzip":
        return gzip.decompress(body)
    return body


def parse_multipart(body: bytes, content_type: str) -> list[dict]:
    """-> [{"name", "content_type", "headers", "data": bytes}] in body order."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise ValueError(f"no boundary in {content_type!r}")
    delim = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):  # closing delimiter
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        nm = re.search(r'name="([^"]*)"', headers.get("content-disposition", ""))
        parts.append(
            {
                "name": nm.group(1) if nm else None,
                "content_type": headers.get("content-type"),
                "headers": headers,
                "data": data,
            }
        )
    return parts


class LangSmithSink:
    def __init__(
        self,
        info_mode: str = "404",
        zstd: bool = False,
        fail_status: int | None = None,
        multipart: bool = True,
        host: str = "127.0.0.1",
        delay_s: float = 0.0,
    ):
        self.info_mode, self.zstd, self.fail_status = info_mode, zstd, fail_status
        self.delay_s = delay_s
        self.multipart = (
            multipart  # False: /runs/multipart answers 404 -> client falls back to /runs/batch
        )
        self.requests: list[dict] = []  # every request: method, path, headers, body (decoded)
        self.ops: list[tuple[str, str, dict]] = []  # ("post"|"patch", run_id, fields) arrival order
        self._feedback: list[dict] = []
        self.errors: list[str] = []  # parse errors inside the sink
        self._lock = threading.Lock()
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as asyncio servers: no 40 ms delayed-ACK stall

            def log_message(self, *a):  # quiet
                pass

            def _read(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reply(self, status: int, obj: Any = None):
                data = json.dumps(obj if obj is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                raw = self._read()
                if sink.delay_s and self.path != "/info":
                    time.sleep(sink.delay_s)
                try:
                    body = decode_body(raw, self.headers.get("Content-Encoding", ""))
                except Exception as e:  # keep raw, note the error
                    body = raw
                    sink.errors.append(f"decode {self.path}: {e!r}")
                rec = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "raw_len": len(raw),
                    "body": body,
                    "t": time.time(),
                }
                with sink._lock:
                    sink.requests.append(rec)
                status, obj = sink._route(self.command, self.path.split("?")[0], self.headers, body)
                self._reply(status, obj)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer((host, 0), H)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # ---- lifecycle
    def start(self) -> LangSmithSink:
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- routing
    def _route(self, method: str, path: str, headers, body: bytes):
        if method == "GET" and path == "/info":
            return (
                (200, full_info(self.zstd, self.multipart))
                if self.info_mode == "full"
                else (404, {"detail": "Not Found"})
            )
        if self.fail_status:
            return self.fail_status, {"detail": "sink configured to fail"}
        try:
            if method == "POST" and path == "/runs/multipart" and self.multipart:
                self._ingest_multipart(parse_multipart(body, headers.get("Content-Type", "")))
                return 202, {}
            if method == "POST" and path == "/runs/batch":
                d = json.loads(body or b"{}")
                for r in d.get("post") or []:
                    self._op("post", str(r["id"]), r)
                for r in d.get("patch") or []:
                    self._op("patch", str(r["id"]), r)
                return 202, {}
            if method == "POST" and path == "/runs":
                r = json.loads(body)
                self._op("post", str(r["id"]), r)
                return 202, {}
            m = re.fullmatch(r"/runs/([0-9a-fA-F-]{36})", path)
            if method == "PATCH" and m:
                r = json.loads(body)
                self._op("patch", m.group(1), {**r, "id": m.group(1)})
                return 202, {}
            if method == "POST" and path == "/feedback":
                fb = json.loads(body)
                with self._lock:
                    self._feedback.append({**fb, "_via": "POST /feedback"})
                return 200, fb
        except Exception as e:
            self.errors.append(f"{method} {path}: {e!r}")
            return 400, {"detail": repr(e)}
        return 404, {"detail": "Not Found"}

    def _op(self, op: str, run_id: str, fields: dict):
        with self._lock:
            self.ops.append((op, run_id, fields))

    def _ingest_multipart(self, parts: list[dict]):
        # names: post.<id> | patch.<id> | post.<id>.<field> | patch.<id>.<field>
        #        | feedback.<id> | attachment.<id>.<name>
        grouped: dict[tuple[str, str], dict] = {}
        order: list[tuple[str, str]] = []
        for p in parts:
            name = p["name"] or ""
            kind, _, rest = name.partition(".")
            if kind == "feedback":
                with self._lock:
                    self._feedback.append({**json.loads(p["data"]), "_via": "multipart"})
                continue
            if kind == "attachment":
                rid, _, aname = rest.partition(".")
                key = next((k for k in order if k[1] == rid), ("post", rid))
                if key not in order:
                    order.append(key)
                grouped.setdefault(key, {}).setdefault("attachments", {})[aname] = (
                    p["content_type"],
                    p["data"],
                )
                continue
            if kind not in ("post", "patch"):
                self.errors.append(f"unknown part {name!r}")
                continue
            rid, _, field = rest.partition(".")
            key = (kind, rid)
            if key not in grouped:
                grouped[key] = {}
            if key not in order:
                order.append(key)
            val = json.loads(p["data"])
            if field:
                grouped[key][field] = val
            else:
                grouped[key].update(val)
        for kind, rid in order:
            self._op(kind, rid, grouped[(kind, rid)])

    # ---- views
    def runs(self) -> dict[str, dict]:
        """Merged view per run id: post fields, then patch fields (non-None) on top.
        Adds convenience keys: metadata (= extra.metadata), is_root."""
        out: dict[str, dict] = {}
        with self._lock:
            ops = list(self.ops)
        for op, rid, fields in ops:
            r = out.setdefault(rid, {"id": rid})
            for k, v in fields.items():
                if op == "patch" and v is None:
                    continue
                if k == "extra" and isinstance(v, dict) and isinstance(r.get("extra"), dict):
                    r["extra"] = {**r["extra"], **v}
                else:
                    r[k] = v
        for r in out.values():
            r["metadata"] = (r.get("extra") or {}).get("metadata") or {}
            r["is_root"] = not r.get("parent_run_id")
        return out

    def roots(self) -> list[dict]:
        return sorted(
            (r for r in self.runs().values() if r["is_root"]),
            key=lambda r: r.get("start_time") or "",
        )

    def children(self, run_id: str) -> list[dict]:
        return sorted(
            (r for r in self.runs().values() if r.get("parent_run_id") == str(run_id)),
            key=lambda r: r.get("dotted_order") or "",
        )

    def feedback(self) -> list[dict]:
        with self._lock:
            return list(self._feedback)

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]
