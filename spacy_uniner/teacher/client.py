"""Teacher backends: the ``openai`` client, or any spacy-llm model config.

Retries are the ``openai`` client's own (``max_retries``): exponential backoff
from 0.5 s to 8 s with jitter, ``Retry-After`` honoured, on 408 / 409 / 429 /
5xx, timeouts and connection errors. An httpx request hook runs before *every*
attempt, retries included: it waits for the shared :mod:`rate limiter
<spacy_uniner.teacher.limiter>` and counts the attempt. When the attempts are
exhausted the passage comes back as a failure (never an exception), to be
written to the errors file and asked again on the next run.

The API key is read from ``OPENAI_API_KEY`` in the driver and handed to the
workers wrapped in :class:`~spacy_uniner.credentials.Secret`, whose ``repr``
never shows it.
"""

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..credentials import Secret, openai_client, short
from .prompt import TeacherPrompt

logger = logging.getLogger("spacy_uniner")

CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class TeacherConfig:
    """Where and how to ask the teacher (picklable; sent to every Ray worker)."""

    model: str = "gpt-3.5-turbo"
    base_url: Optional[str] = None
    backend: str = "openai"  # or "spacy-llm"
    llm_config: Optional[str] = None  # spacy-llm: a .cfg file with a [model] block
    timeout: float = 60.0
    max_attempts: int = 6
    expected_completion_tokens: int = 200

    def __post_init__(self) -> None:
        if self.backend not in ("openai", "spacy-llm"):
            raise ValueError(
                f"Unknown teacher backend {self.backend!r}; use 'openai' or 'spacy-llm'."
            )
        if self.backend == "spacy-llm" and not self.llm_config:
            raise ValueError(
                "The spacy-llm backend needs llm_config: a .cfg file with a [model] block."
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1; got {self.max_attempts}")

    @property
    def teacher_name(self) -> str:
        """The name recorded with each row and used in the cache key."""
        if self.backend == "spacy-llm":
            text = Path(self.llm_config).read_text(encoding="utf-8")
            return f"spacy-llm:{self.model}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        return self.model


def estimate_tokens(text: str) -> int:
    return max(1, int(len(text) / CHARS_PER_TOKEN + 0.5))


def estimate_request_tokens(prompt: TeacherPrompt, passage: str, completion: int) -> int:
    messages = prompt.messages(passage)
    return sum(estimate_tokens(m["content"]) + 4 for m in messages) + completion


Reserve = Callable[[float], float]  # tokens -> seconds to wait
Settle = Callable[[float, float], None]


def _no_wait(tokens: float) -> float:
    return 0.0


def _no_settle(estimated: float, actual: float) -> None:
    return None


class _Teacher:
    """What the teachers share: the config, the prompt and the shared rate limit
    (``reserve`` tokens before a request, ``settle`` the estimate with what it used)."""

    def __init__(
        self,
        config: TeacherConfig,
        prompt: TeacherPrompt,
        api_key: Secret,
        reserve: Reserve = _no_wait,
        settle: Settle = _no_settle,
    ) -> None:
        self.config = config
        self.prompt = prompt
        self._reserve = reserve
        self._settle = settle
        self._connect(api_key)

    def _connect(self, api_key: Secret) -> None:
        """Set up the backend (a client, a model)."""

    def _wait_for(self, tokens: float) -> None:
        wait = self._reserve(tokens)
        if wait > 0:
            time.sleep(wait)


class OpenAITeacher(_Teacher):
    """Ask an OpenAI-compatible chat-completions endpoint, one passage per call."""

    def _connect(self, api_key: Secret) -> None:
        import openai

        config = self.config
        self._local = threading.local()
        http_client = openai.DefaultHttpxClient(
            event_hooks={"request": [self._before_attempt]}, timeout=config.timeout
        )
        self._client = openai_client(
            api_key, config.base_url, config.max_attempts, config.timeout, http_client=http_client
        )

    def _before_attempt(self, request) -> None:
        self._wait_for(self._local.estimate)
        self._local.attempts += 1

    def ask(self, passage: str) -> Dict[str, Any]:
        import openai

        estimate = estimate_request_tokens(
            self.prompt, passage, self.prompt.max_tokens or self.config.expected_completion_tokens
        )
        self._local.estimate = estimate
        self._local.attempts = 0
        kwargs: Dict[str, Any] = {"temperature": self.prompt.temperature}
        if self.prompt.max_tokens:
            kwargs["max_tokens"] = self.prompt.max_tokens
        try:
            response = self._client.chat.completions.create(
                model=self.config.model, messages=self.prompt.messages(passage), **kwargs
            )
        except openai.APIStatusError as err:
            return self._failure(f"HTTP {err.status_code} after retries: {short(err.message)}")
        except openai.APITimeoutError:
            return self._failure(f"timed out after {self.config.timeout:.0f} s per attempt")
        except openai.APIConnectionError as err:
            return self._failure(f"connection error: {short(str(err))}")
        except openai.OpenAIError as err:
            return self._failure(f"{type(err).__name__}: {short(str(err))}")
        if not response.choices:
            return self._failure("response without choices")
        choice = response.choices[0]
        reply = choice.message.content or ""
        if response.usage is not None:
            usage = {
                "prompt_tokens": int(response.usage.prompt_tokens or 0),
                "completion_tokens": int(response.usage.completion_tokens or 0),
                "total_tokens": int(response.usage.total_tokens or 0),
            }
        else:
            usage = _estimated_usage(estimate, reply)
        self._settle(estimate * self._local.attempts, usage["total_tokens"])
        return {
            "ok": True,
            "reply": reply,
            "usage": usage,
            "finish_reason": choice.finish_reason,
            "attempts": self._local.attempts,
        }

    def _failure(self, error: str) -> Dict[str, Any]:
        self._settle(self._local.estimate * self._local.attempts, 0)
        return {"ok": False, "error": error, "attempts": self._local.attempts}


class SpacyLLMTeacher(_Teacher):
    """Ask through any spacy-llm model (the ``[model]`` block of a config file).

    spacy-llm models take one prompt string (sent as the user message) and do
    their own retries; the shared limit is reserved once per passage and the
    token usage is estimated from characters.
    """

    def _connect(self, api_key: Secret) -> None:
        self.model = load_spacy_llm_model(self.config.llm_config)

    def ask(self, passage: str) -> Dict[str, Any]:
        user = self.prompt.messages(passage)[1]["content"]
        estimate = estimate_tokens(user) + self.config.expected_completion_tokens
        self._wait_for(estimate)
        try:
            reply = list(list(self.model([[user]]))[0])[0]
        except Exception as err:  # spacy-llm raises ValueError/ConnectionError/TimeoutError
            self._settle(estimate, 0)
            return {
                "ok": False,
                "error": f"{type(err).__name__}: {short(str(err))}",
                "attempts": 1,
            }
        usage = _estimated_usage(estimate - self.config.expected_completion_tokens, reply)
        self._settle(estimate, usage["total_tokens"])
        return {"ok": True, "reply": reply, "usage": usage, "finish_reason": None, "attempts": 1}


def load_spacy_llm_model(path: str):
    """Resolve the ``[model]`` block of a spacy-llm config file into a model callable."""
    import spacy_llm  # noqa: F401  (creates the llm_models registry)
    from confection import Config
    from spacy.util import registry

    config = Config().from_disk(path)
    if "model" not in config:
        sections = ", ".join(config.keys()) or "none"
        raise ValueError(f"{path}: no [model] block (sections: {sections}).")
    return registry.resolve({"model": config["model"]})["model"]


def _estimated_usage(prompt_tokens: int, reply: str) -> Dict[str, int]:
    completion = estimate_tokens(reply) if reply else 0
    return {
        "prompt_tokens": int(prompt_tokens),
        "completion_tokens": completion,
        "total_tokens": int(prompt_tokens) + completion,
        "estimated": 1,
    }


def make_teacher(config: TeacherConfig, prompt: TeacherPrompt, api_key: Secret, reserve, settle):
    cls = SpacyLLMTeacher if config.backend == "spacy-llm" else OpenAITeacher
    return cls(config, prompt, api_key, reserve=reserve, settle=settle)


class TeacherWorker:
    """Ray actor body: one teacher client, several passages in flight (threads).

    Actors outlive a run inside one Ray session; :meth:`configure` points them
    at a run's teacher, prompt and limiter.
    """

    def __init__(self) -> None:
        self.teacher = None

    def configure(
        self, config: TeacherConfig, prompt: TeacherPrompt, api_key: Secret, limiter
    ) -> bool:
        import ray

        def reserve(tokens: float) -> float:
            return ray.get(limiter.reserve.remote(tokens)) if limiter is not None else 0.0

        def settle(estimated: float, actual: float) -> None:
            if limiter is not None:
                limiter.settle.remote(estimated, actual)

        self.teacher = make_teacher(config, prompt, api_key, reserve, settle)
        return True

    def ask(self, index: int, passage: str) -> Dict[str, Any]:
        try:
            result = self.teacher.ask(passage)
        except Exception as err:  # never lose a passage to a worker exception
            result = {
                "ok": False,
                "error": f"{type(err).__name__}: {short(str(err))}",
                "attempts": 0,
            }
        result["index"] = index
        return result


def worker_actors(workers: int, concurrency: int) -> List[Any]:
    import ray

    actor = ray.remote(num_cpus=0, max_concurrency=concurrency)(TeacherWorker)
    return [actor.remote() for _ in range(workers)]
