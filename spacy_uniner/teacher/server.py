"""The local OpenAI-compatible replay teacher: an HTTP server with fault injection.

Speaks ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1.
``GET /stats`` returns the request counters, ``POST /stats/reset`` zeroes them.
Known Pile-NER passages are answered from the real ChatGPT answers (see
:mod:`.replay`), anything else with ``[]``. Faults: a share of requests gets
429 / 500 / 503 (optionally with ``retry-after-ms``), a share of replies is
damaged the way LLM replies are (prose around the list, truncation, single
quotes, an extra nesting level, a refusal), and every request can be delayed.
The CLI is ``python -m ray_jobs.teacher_server``.
"""

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Sequence

from .prompt import passage_from_user_message, variant_of_user_message
from .replay import ReplayTeacher

GARBAGE = (
    lambda r: "Sure! Here are the entities I found:\n" + r + "\nLet me know if you need more.",
    lambda r: r[: max(1, len(r) * 2 // 3)],  # truncated
    lambda r: r.replace('"', "'"),  # single quotes
    lambda r: "[" + r + "]",  # nested one level deeper
    lambda r: "I'm sorry, but I cannot help with that request.",
)


class TeacherServer:
    """The replay server; ``start()`` runs it in a background thread (tests), ``serve()`` blocks."""

    def __init__(
        self,
        teacher: ReplayTeacher,
        port: int = 0,
        host: str = "127.0.0.1",
        fail_rate: float = 0.0,
        fail_status: Sequence[int] = (429,),
        delay_ms: float = 0.0,
        garbage_rate: float = 0.0,
        retry_after_ms: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        self.teacher = teacher
        self.fail_rate = fail_rate
        self.fail_status = tuple(fail_status)
        self.delay_ms = delay_ms
        self.garbage_rate = garbage_rate
        self.retry_after_ms = retry_after_ms
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.arrivals: list = []  # monotonic arrival time of every chat request (benchmarks)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.arrivals.clear()

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count(self, *keys: str) -> None:
        with self._lock:
            self.counts.update(keys)

    def answer(self, body: dict) -> tuple:
        """(status, payload, headers) for one chat-completions request body."""
        with self._lock:
            self.counts["requests"] += 1
            self.arrivals.append(time.monotonic())
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        if self.fail_rate and self._draw() < self.fail_rate:
            status = self.fail_status[int(self._draw() * len(self.fail_status))]
            self._count(f"status_{status}")
            headers = {}
            if self.retry_after_ms is not None:
                headers["retry-after-ms"] = str(self.retry_after_ms)
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            return status, {"error": {"message": f"injected {status}", "type": kind}}, headers
        messages = body.get("messages") or []
        user = next(
            (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
        )
        if not isinstance(user, str):
            self._count("status_400")
            return 400, {"error": {"message": "content must be a string", "type": "invalid"}}, {}
        passage = passage_from_user_message(user)
        reply = self.teacher.reply(
            passage if passage is not None else user, variant_of_user_message(user)
        )
        if self.garbage_rate and self._draw() < self.garbage_rate:
            reply = GARBAGE[int(self._draw() * len(GARBAGE))](reply)
            self._count("garbage")
        self._count("completions", "status_200")
        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        usage = {
            "prompt_tokens": max(1, prompt_chars // 4),
            "completion_tokens": max(1, len(reply) // 4),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        payload = {
            "id": f"chatcmpl-replay-{self.counts['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "replay"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return 200, payload, {}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Small replies on a kept-alive connection: without this, Nagle's algorithm
            # and delayed ACKs add ~40 ms to every request.
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # quiet; never logs headers
                return

            def _send(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/stats":
                    self._send(200, server.stats())
                elif self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200, {"object": "list", "data": [{"id": "replay", "object": "model"}]}
                    )
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") == "/stats/reset":
                    server.reset()
                    self._send(200, {"reset": True})
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if self.headers.get("Authorization"):
                    server._count("with_authorization")
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid"}})
                    return
                status, payload, headers = server.answer(body)
                self._send(status, payload, headers)

        return Handler

    def start(self) -> "TeacherServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "TeacherServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
