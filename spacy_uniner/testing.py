"""``test.ScriptedStudent.v1``: a deterministic model double for pipeline tests.

It answers each query from a table keyed by entity type, records every prompt
it was asked, and can be told to fail on passages that contain a marker. It
tokenises on words and punctuation, so window sizes are easy to reason about.

``test.ExitOnceStudent.v1`` wraps a student and ends its process once, to
test what happens when a Ray actor dies.

:class:`StudentServer` serves any student over the OpenAI completions API on
127.0.0.1, with injectable faults, for ``spacy_uniner.OpenAIStudent.v1``.
"""

import json
import math
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .models.base import Generation
from .prompts import parse_query
from .registry import uniner_models

_TOKEN = re.compile(r"\w+|[^\w\s]")

class ScriptedStudent:
    def __init__(
        self,
        replies: Dict[str, str],
        default: str = "[]",
        scores: Optional[Dict[str, float]] = None,
        fail_on: Sequence[str] = (),
    ) -> None:
        self.replies = dict(replies)
        self.default = default
        self.scores = dict(scores or {})
        self.fail_on = tuple(fail_on)
        self.prompts: List[str] = []
        self.calls = 0

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        self.calls += 1
        out = []
        for prompt in prompts:
            passage, label = parse_query(prompt)
            for marker in self.fail_on:
                if marker in passage:
                    raise RuntimeError(f"scripted failure on a passage containing {marker!r}")
            self.prompts.append(prompt)
            reply = self.replies.get(label, self.default)
            score = self.scores.get(label)
            if score is None:
                out.append(Generation(reply))
            else:
                out.append(Generation(reply, ((0, len(reply)),), (math.log(score),)))
        return out


@uniner_models("test.ScriptedStudent.v1")
def make_scripted_student_v1(
    replies: Dict[str, str],
    default: str = "[]",
    scores: Optional[Dict[str, float]] = None,
    fail_on: Sequence[str] = (),
) -> ScriptedStudent:
    """replies (Dict[str, str]): the raw reply for each entity type.
    default (str): the reply for types not in ``replies``.
    scores (Optional[Dict[str, float]]): a confidence per type (else 1.0).
    fail_on (Sequence[str]): raise on passages containing any of these strings.
    """
    return ScriptedStudent(replies, default=default, scores=scores, fail_on=fail_on)


class ExitOnceStudent:
    """Wraps a student; the first prompt whose passage holds ``marker`` ends the
    process with ``os._exit(1)``, as a crashed Ray actor would. ``flag_file``
    (created atomically) makes it happen once across all processes, so the retry
    on a fresh actor succeeds. Only for students running in Ray actors."""

    def __init__(self, student: Any, marker: str, flag_file: str) -> None:
        self.student = student
        self.marker = marker
        self.flag_file = flag_file

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return self.student.token_offsets(text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        import os

        for prompt in prompts:
            if self.marker in parse_query(prompt)[0]:
                try:
                    os.close(os.open(self.flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    break
                os._exit(1)
        return self.student.generate(prompts)


@uniner_models("test.ExitOnceStudent.v1")
def make_exit_once_student_v1(student: Any, marker: str, flag_file: str) -> ExitOnceStudent:
    """student: the student block to wrap.
    marker (str): a passage containing this ends the process, once.
    flag_file (str): created when it happens; while it exists nothing happens.
    """
    return ExitOnceStudent(student, marker, flag_file)


class StudentServer:
    """An OpenAI-compatible *completions* server on 127.0.0.1 that answers through a student.

    ``POST /v1/completions`` takes a prompt or a list of prompts (as vLLM does)
    and answers each through ``student`` (e.g. :class:`ScriptedStudent`, or an
    ``HFStudent`` on a tiny model for real log-probabilities). Like a real
    server it prefixes the reply with the space that follows ``ASSISTANT:``,
    honours ``stop`` and returns OpenAI-style ``logprobs`` when asked.
    ``GET /stats`` returns the counters. Faults to test clients with: a share
    of requests fails with ``fail_status`` (optionally with
    ``retry-after-ms``), every request can be delayed (``delay_ms`` plus a
    random ``jitter_ms``), a share of replies is damaged by one of ``garbage``,
    a share of responses is a broken body (``broken_rate``: HTML, no choices),
    lists of prompts can be refused (``accept_lists=False``), and with
    ``api_key`` a request without that bearer key gets 401 (vLLM's --api-key).
    """

    def __init__(
        self,
        student: Any,
        *,
        port: int = 0,
        model: str = "uniner-test",
        api_key: Optional[str] = None,
        accept_lists: bool = True,
        fail_rate: float = 0.0,
        fail_status: Sequence[int] = (429,),
        retry_after_ms: Optional[int] = None,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        garbage_rate: float = 0.0,
        garbage: Optional[Sequence[Callable[[str], str]]] = None,
        broken_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        from http.server import ThreadingHTTPServer

        from .teacher.server import GARBAGE

        self.student = student
        self.model = model
        self._api_key = api_key
        self.accept_lists = accept_lists
        self.fail_rate = fail_rate
        self.fail_status = tuple(fail_status)
        self.retry_after_ms = retry_after_ms
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.garbage_rate = garbage_rate
        self.garbage = tuple(garbage if garbage is not None else GARBAGE)
        self.broken_rate = broken_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generate at a time (HF models)
        self._in_flight = 0
        self.counts: Counter = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count(self, *keys: str, by: int = 1) -> None:
        with self._lock:
            for key in keys:
                self.counts[key] += by

    def complete(self, body: Dict[str, Any], authorization: Optional[str]) -> Tuple[int, Any, Dict]:
        """(status, payload, headers) for one completions request body."""
        self._count("requests")
        if authorization:
            self._count("with_authorization")
        if self._api_key is not None and authorization != f"Bearer {self._api_key}":
            return self._error(401, "invalid or missing API key", "authentication_error")
        with self._lock:
            self._in_flight += 1
            self.counts["max_in_flight"] = max(self.counts["max_in_flight"], self._in_flight)
        try:
            delay = self.delay_ms + self.jitter_ms * self._draw()
            if delay:
                time.sleep(delay / 1000)
            if self.fail_rate and self._draw() < self.fail_rate:
                status = self.fail_status[int(self._draw() * len(self.fail_status))]
                kind = "rate_limit_exceeded" if status == 429 else "server_error"
                status, payload, headers = self._error(status, f"injected {status}", kind)
                if self.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(self.retry_after_ms)
                return status, payload, headers
            if self.broken_rate and self._draw() < self.broken_rate:
                self._count("broken")
                return 200, "<html><body>502 Bad Gateway</body></html>", {}
            return self._answer(body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _error(self, status: int, message: str, kind: str) -> Tuple[int, Any, Dict]:
        self._count(f"status_{status}")
        return status, {"error": {"message": message, "type": kind, "code": status}}, {}

    def _answer(self, body: Dict[str, Any]) -> Tuple[int, Any, Dict]:
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
        self._count("status_200")
        self._count("prompts", by=len(prompts))
        if listed:
            self._count("list_requests")
        prompt_tokens = sum(len(p) // 4 for p in prompts)
        completion_tokens = sum(
            len(c["logprobs"]["tokens"]) if c["logprobs"] else 1 for c in choices
        )
        payload = {
            "id": f"cmpl-student-{self.counts['requests']}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, payload, {}

    def _choice(self, index: int, gen: Generation, stops: List[str], logprobs: bool) -> Dict:
        text = " " + gen.text
        # As from a real server, the first token carries the leading space.
        offsets = [(0 if n == 0 else s + 1, e + 1) for n, (s, e) in enumerate(gen.token_offsets)]
        values = list(gen.token_logprobs)
        if self.garbage_rate and self._draw() < self.garbage_rate:
            text = " " + self.garbage[int(self._draw() * len(self.garbage))](gen.text)
            offsets, values = [], []
            self._count("garbage")
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

    def _handler(self):
        server = self

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

            def do_GET(self):
                if self.path.rstrip("/") == "/stats":
                    self._send(200, server.stats())
                elif self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") != "/v1/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                self._send(*server.complete(body, self.headers.get("Authorization")))

        return Handler

    def start(self) -> "StudentServer":
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "StudentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
