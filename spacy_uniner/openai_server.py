"""A local OpenAI-compatible server with fault injection: the replay teacher, a student.

One server on 127.0.0.1 for both sides of the recipe, as tests and unattended
runs need them:

* ``POST /v1/chat/completions`` answered by a ``teacher`` (the replay teacher,
  :class:`spacy_uniner.teacher.replay.ReplayTeacher`: known Pile-NER passages
  get the real ChatGPT answers, anything else ``[]``) — what
  ``ray_jobs.annotate --replay-teacher`` and ``python -m ray_jobs.teacher_server``
  serve;
* ``POST /v1/completions`` answered by a ``student`` (any object with
  ``generate(prompts)``, e.g. ``spacy_uniner.testing.ScriptedStudent`` or an
  ``HFStudent`` on a tiny model), as vLLM serves one for
  ``spacy_uniner.OpenAIStudent.v1``: a prompt or a list of prompts, the reply
  prefixed with the space that follows ``ASSISTANT:``, ``stop`` honoured,
  OpenAI-style ``logprobs`` when asked;
* ``GET /v1/models``, ``GET /stats`` (the request counters) and
  ``POST /stats/reset``.

Faults to test clients with (:class:`Faults`): a share of requests fails with
one of ``fail_status`` (optionally with ``retry-after-ms``), every request can
be delayed (``delay_ms`` plus a random ``jitter_ms``), a share of replies is
damaged the way model replies are (:data:`GARBAGE`: prose around the list,
truncation, single quotes, an extra nesting level, a refusal), a share of
responses is a broken body (``broken_rate``: HTML, no choices); lists of
prompts can be refused (``accept_lists=False``), and with ``api_key`` a
request without that bearer key gets 401 (vLLM's ``--api-key``).
"""

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

GARBAGE: Tuple[Callable[[str], str], ...] = (
    lambda r: "Sure! Here are the entities I found:\n" + r + "\nLet me know if you need more.",
    lambda r: r[: max(1, len(r) * 2 // 3)],  # truncated
    lambda r: r.replace('"', "'"),  # single quotes
    lambda r: "[" + r + "]",  # nested one level deeper
    lambda r: "I'm sorry, but I cannot help with that request.",
)
Response = Tuple[int, Any, Dict[str, str]]  # status, payload (a str is sent as HTML), headers


@dataclass
class Faults:
    """What the server gets wrong on purpose; all off by default, and can be changed
    while it runs (``server.faults.fail_rate = 0.0``).

    fail_rate, fail_status, retry_after_ms: a share of requests fails with one of
        these statuses (with a ``retry-after-ms`` header if given).
    delay_ms, jitter_ms: every request waits ``delay_ms`` plus up to ``jitter_ms``.
    garbage_rate, garbage: a share of replies is damaged by one of ``garbage``.
    broken_rate: a share of responses is a broken body (HTML, no choices).
    """

    fail_rate: float = 0.0
    fail_status: Sequence[int] = (429,)
    retry_after_ms: Optional[int] = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    garbage_rate: float = 0.0
    garbage: Sequence[Callable[[str], str]] = GARBAGE
    broken_rate: float = 0.0


class OpenAIServer:
    """The server; ``start()`` runs it in a background thread, ``serve()`` blocks.

    teacher: answers chat completions (``reply(passage, variant)``), or None.
    student: answers completions (``generate(prompts)``), or None.
    model (str): the model ``GET /v1/models`` lists (default: "replay" for a
        teacher, else "uniner-test").
    api_key (str): if given, a request without this bearer key gets 401.
    accept_lists (bool): take a list of prompts in one completions request.
    faults: the :class:`Faults` to inject (keyword arguments).
    """

    def __init__(
        self,
        teacher: Any = None,
        student: Any = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        model: Optional[str] = None,
        api_key: Optional[str] = None,
        accept_lists: bool = True,
        seed: int = 0,
        **faults: Any,
    ) -> None:
        if teacher is None and student is None:
            raise ValueError("OpenAIServer needs a teacher, a student or both to answer with")
        self.teacher = teacher
        self.student = student
        self.model = model or ("replay" if teacher is not None else "uniner-test")
        self._api_key = api_key
        self.accept_lists = accept_lists
        self.faults = Faults(**faults)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generate at a time (HF models)
        self._in_flight = 0
        self.counts: Counter = Counter()
        self.arrivals: List[float] = []  # monotonic arrival time of every request (benchmarks)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.arrivals.clear()

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count(self, *keys: str, by: int = 1) -> None:
        with self._lock:
            for key in keys:
                self.counts[key] += by

    # ------------------------------------------------------------ requests

    def handle(self, route: str, body: Dict[str, Any], authorization: Optional[str]) -> Response:
        """(status, payload, headers) for one request body to ``route``
        ("chat/completions" or "completions"), faults included."""
        with self._lock:
            self.counts["requests"] += 1
            self.arrivals.append(time.monotonic())
            if authorization:
                self.counts["with_authorization"] += 1
        if self._api_key is not None and authorization != f"Bearer {self._api_key}":
            return self._error(401, "invalid or missing API key", "authentication_error")
        with self._lock:
            self._in_flight += 1
            self.counts["max_in_flight"] = max(self.counts["max_in_flight"], self._in_flight)
        faults = self.faults
        try:
            delay = faults.delay_ms + faults.jitter_ms * self._draw()
            if delay:
                time.sleep(delay / 1000)
            if faults.fail_rate and self._draw() < faults.fail_rate:
                status = faults.fail_status[int(self._draw() * len(faults.fail_status))]
                kind = "rate_limit_exceeded" if status == 429 else "server_error"
                status, payload, headers = self._error(status, f"injected {status}", kind)
                if faults.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(faults.retry_after_ms)
                return status, payload, headers
            if faults.broken_rate and self._draw() < faults.broken_rate:
                self._count("broken")
                return 200, "<html><body>502 Bad Gateway</body></html>", {}
            return self.chat(body) if route == "chat/completions" else self.complete(body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _error(self, status: int, message: str, kind: str) -> Response:
        self._count(f"status_{status}")
        return status, {"error": {"message": message, "type": kind, "code": status}}, {}

    def _damaged(self, reply: str) -> Optional[str]:
        """``reply`` damaged by one of the garbage faults, for a share of replies; else None."""
        garbage = self.faults.garbage
        if self.faults.garbage_rate and self._draw() < self.faults.garbage_rate:
            self._count("garbage")
            return garbage[int(self._draw() * len(garbage))](reply)
        return None

    def _payload(self, kind: str, body: Dict[str, Any], choices: List[Dict], prompt_tokens: int,
                 completion_tokens: int) -> Response:
        self._count("status_200")
        return 200, {
            "id": f"{kind}-{self.counts['requests']}",
            "object": kind,
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }, {}

    def chat(self, body: Dict[str, Any]) -> Response:
        """A chat completion from the teacher (the last user message is the prompt)."""
        from .teacher.prompt import passage_from_user_message, variant_of_user_message

        messages = body.get("messages") or []
        user = next(
            (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
        )
        if not isinstance(user, str):
            return self._error(400, "content must be a string", "invalid")
        passage = passage_from_user_message(user)
        reply = self.teacher.reply(
            passage if passage is not None else user, variant_of_user_message(user)
        )
        reply = self._damaged(reply) or reply
        self._count("completions")
        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        choice = {"index": 0, "message": {"role": "assistant", "content": reply},
                  "finish_reason": "stop"}
        return self._payload("chat.completion", body, [choice], max(1, prompt_chars // 4),
                             max(1, len(reply) // 4))

    def complete(self, body: Dict[str, Any]) -> Response:
        """Completions from the student, one per prompt."""
        prompt = body.get("prompt")
        listed = isinstance(prompt, list)
        if listed and not self.accept_lists:
            return self._error(400, "prompt must be a string", "BadRequestError")
        prompts = prompt if listed else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return self._error(400, "prompt must be a string or a list of strings", "invalid")
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        try:
            with self._generate_lock:
                gens = self.student.generate(prompts)
        except ValueError as err:  # not a UniNER prompt
            return self._error(400, str(err), "BadRequestError")
        choices = [
            self._choice(i, gen, stops, body.get("logprobs") is not None)
            for i, gen in enumerate(gens)
        ]
        self._count("prompts", by=len(prompts))
        if listed:
            self._count("list_requests")
        completion_tokens = sum(
            len(c["logprobs"]["tokens"]) if c["logprobs"] else 1 for c in choices
        )
        return self._payload("text_completion", body, choices,
                             sum(len(p) // 4 for p in prompts), completion_tokens)

    def _choice(self, index: int, gen: Any, stops: List[str], logprobs: bool) -> Dict:
        text = " " + gen.text
        # As from a real server, the first token carries the leading space.
        offsets = [(0 if n == 0 else s + 1, e + 1) for n, (s, e) in enumerate(gen.token_offsets)]
        values = list(gen.token_logprobs)
        damaged = self._damaged(gen.text)
        if damaged is not None:
            text, offsets, values = " " + damaged, [], []
        if not values:  # one token for the whole reply, probability 1
            offsets, values = [(0, len(text))], [0.0]
        finish = "length"
        cuts = [text.find(s) for s in stops if s and s in text]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        kept = [(o, v) for o, v in zip(offsets, values) if o[0] < len(text)]
        return {
            "index": index,
            "text": text,
            "logprobs": {
                "tokens": [text[s:e] for (s, e), _ in kept],
                "token_logprobs": [v for _, v in kept],
                "text_offset": [s for (s, _), _ in kept],
                "top_logprobs": None,
            }
            if logprobs
            else None,
            "finish_reason": finish,
        }

    # ------------------------------------------------------------ HTTP

    def _handler(self):
        server = self
        routes = {
            "/v1/chat/completions": "chat/completions" if self.teacher is not None else None,
            "/v1/completions": "completions" if self.student is not None else None,
        }

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every request.
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # quiet; never logs headers
                return

            def _send(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
                html = isinstance(payload, str)
                data = (payload if html else json.dumps(payload)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if html else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout under test)

            def _no_route(self) -> None:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self):
                if self.path.rstrip("/") == "/stats":
                    self._send(200, server.stats())
                elif self.path.rstrip("/") == "/v1/models":
                    models = [{"id": server.model, "object": "model"}]
                    self._send(200, {"object": "list", "data": models})
                else:
                    self._no_route()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.rstrip("/")
                if path == "/stats/reset":
                    server.reset()
                    self._send(200, {"reset": True})
                    return
                route = routes.get(path)
                if route is None:
                    self._no_route()
                    return
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid"}})
                    return
                self._send(*server.handle(route, body, self.headers.get("Authorization")))

        return Handler

    def start(self) -> "OpenAIServer":
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
