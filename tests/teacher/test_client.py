"""The openai backend without Ray: retries, timeouts, the limiter on every attempt."""

from spacy_uniner.teacher.client import OpenAITeacher, Secret, TeacherConfig
from spacy_uniner.teacher.limiter import RateLimiter
from spacy_uniner.teacher.prompt import TeacherPrompt


def make(server, limiter=None, **kwargs):
    config = TeacherConfig(model="replay", base_url=server.base_url, **kwargs)
    limiter = limiter or RateLimiter()
    return OpenAITeacher(
        config, TeacherPrompt.for_variant("type"), Secret("sk-x"), limiter.reserve, limiter.settle
    )


def test_retries_consult_the_limiter_every_attempt(teacher_server):
    server = teacher_server(fail_rate=1.0, fail_status=(429, 500), retry_after_ms=1)
    limiter = RateLimiter(rpm=60_000)
    result = make(server, limiter, max_attempts=3).ask("Ada Lovelace met Charles Babbage.")
    assert not result["ok"] and result["attempts"] == 3
    assert result["error"].startswith("HTTP 429") or result["error"].startswith("HTTP 500")
    assert server.stats()["requests"] == 3 and limiter.reserved_requests == 3


def test_backoff_then_success(teacher_server):
    server = teacher_server(
        fail_rate=0.5, fail_status=(503,), seed=2
    )  # no retry-after: real backoff
    teacher = make(server, max_attempts=10)
    results = [teacher.ask(f"Passage number {i} about Paris.") for i in range(6)]
    assert all(r["ok"] and r["reply"] == "[]" for r in results)
    assert sum(r["attempts"] for r in results) == server.stats()["requests"] > 6


def test_timeouts_are_retried_then_reported(teacher_server):
    server = teacher_server(delay_ms=1500)
    result = make(server, max_attempts=2, timeout=0.3).ask("Slow passage about Rome.")
    assert not result["ok"] and "timed out" in result["error"] and result["attempts"] == 2
