"""``spacy_uniner.OpenAIStudent.v1``: a student served over the OpenAI *completions* API.

Meant for vLLM (or any server speaking ``POST /v1/completions``) hosting a
UniNER checkpoint such as ``Universal-NER/UniNER-7B-type``. The prompts are the
component's own UniNER prompts, sent as plain completions: greedy
(``temperature`` 0), at most ``max_tokens``, with ``"</s>"`` as a stop sequence
(UniNER's separator; a tokenizer that splits it into several tokens would
otherwise run on), and ``logprobs`` so spans get confidences.

Queries are sent ``batch_size`` prompts per request (vLLM takes a list of
prompts) with up to ``concurrency`` requests in flight, on one pool of threads
per student. :meth:`OpenAIStudent.submit` sends a call's requests and returns at
once, so ``nlp.pipe`` has the next batch's requests in flight while it reads the
replies of one (``lookahead``) and the server never waits between batches. A
server that rejects a list (HTTP 400/422) or does not answer every prompt of it
is asked one prompt per request from then on. Retries are the ``openai`` client's own, as
for the teacher (:mod:`spacy_uniner.teacher.client`): exponential backoff with
jitter, ``Retry-After`` honoured, on 408/409/429/5xx, timeouts and connection
errors. When the attempts are spent, :class:`StudentServerError` names the
endpoint and what went wrong; the component hands it to its error handler.

The API key is read from the environment variable ``api_key_env`` when the
client is built; it is never logged, kept in the config or written by
``to_disk``.
"""

import json
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..credentials import Secret, openai_client, public_url, short
from ..default_student import resolve_model
from ..parsing import STOP_MARKER
from ..passages import word_offsets
from ..registry import uniner_models
from .base import Generation, finish_reply

logger = logging.getLogger("spacy_uniner")

WORDS = "words"  # tokenizer setting: measure windows in words and punctuation
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StudentServerError(RuntimeError):
    """The completions server gave no usable answer after all attempts."""


class PendingReplies:
    """The replies of one :meth:`OpenAIStudent.submit` call, one future per request."""

    def __init__(self, futures: List["Future[List[Generation]]"]) -> None:
        self._futures = futures

    def result(self) -> List[Generation]:
        """Block until every request is answered; RETURNS the replies in prompt order.

        RAISES (StudentServerError): a request failed after every attempt; the call's
            requests not sent yet are dropped.
        """
        replies: List[Generation] = []
        try:
            for future in self._futures:
                replies.extend(future.result())
        except BaseException:
            self.cancel()
            raise
        return replies

    def cancel(self) -> None:
        """Drop the requests not sent yet; those already sent are left to finish."""
        for future in self._futures:
            future.cancel()


@uniner_models("spacy_uniner.OpenAIStudent.v1")
class OpenAIStudent:
    """``spacy_uniner.OpenAIStudent.v1``: a student behind an OpenAI-compatible
    completions server, e.g. vLLM serving
    ``Universal-NER/UniNER-7B-type`` (``vllm serve Universal-NER/UniNER-7B-type``).

    model (str): the model name the server serves (``GET /v1/models``).
    base_url (str): the server's API root, e.g. "http://127.0.0.1:8000/v1".
    api_key_env (Optional[str]): the environment variable holding the API key;
        a server without a key (vLLM without --api-key) needs none. The key is
        never logged or written.
    tokenizer (Optional[str]): the HF tokenizer (folder or hub id) that measures
        the component's windows; "default" is the default student's. If None,
        ``model`` is used when transformers finds it locally (a folder or the HF
        cache), else windows are measured in words and punctuation (with a
        warning; "words" picks that measure quietly).
    allow_download (bool): let transformers fetch a tokenizer hub id that is not cached.
    max_tokens (int): the longest reply.
    batch_size (int): prompts per request; the server must take a list of
        prompts (vLLM does), else one per request is sent after the first refusal.
    concurrency (int): requests in flight at once.
    timeout (float): seconds per attempt.
    max_attempts (int): attempts per request, retries on 408/409/429/5xx,
        timeouts and connection errors included.
    logprobs (bool): ask for token log-probabilities, which give the spans'
        scores (else every span scores 1.0).
    """
    # nlp.pipe keeps this many batches submitted besides the one whose replies it reads
    lookahead = 1

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key_env: Optional[str] = "OPENAI_API_KEY",
        tokenizer: Optional[str] = None,
        allow_download: bool = False,
        max_tokens: int = 96,
        batch_size: int = 16,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 4,
        logprobs: bool = True,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"OpenAIStudent needs the served model's name, got {model!r}")
        if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"OpenAIStudent base_url must be an http(s) URL such as "
                f"'http://127.0.0.1:8000/v1', got {base_url!r}"
            )
        counts = dict(max_tokens=max_tokens, batch_size=batch_size, concurrency=concurrency,
                      max_attempts=max_attempts)
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"OpenAIStudent {name} must be a positive integer, got {value!r}")
        if api_key_env is not None and not (
            isinstance(api_key_env, str) and _ENV_NAME.match(api_key_env)
        ):
            # The value is not echoed: it may be a key pasted in the wrong place.
            raise ValueError(
                "OpenAIStudent api_key_env must be the name of an environment variable "
                "(e.g. 'OPENAI_API_KEY'), not the key itself."
            )
        if not timeout or timeout <= 0:
            raise ValueError(f"OpenAIStudent timeout must be positive seconds, got {timeout!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.tokenizer_name = tokenizer
        self.allow_download = allow_download
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.logprobs = logprobs
        self._client: Any = None
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        # None: not known yet; False: the server wants one prompt per request.
        self._takes_lists: Optional[bool] = None

    def __repr__(self) -> str:
        return (
            f"OpenAIStudent({self.model!r}, base_url={public_url(self.base_url)!r}, "
            f"tokenizer={self.tokenizer_name!r})"
        )

    @property
    def endpoint(self) -> str:
        """The completions URL, as named in errors and logs."""
        return public_url(self.base_url) + "/completions"

    # The client -----------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                key = Secret.from_env(self.api_key_env) if self.api_key_env else Secret(None)
                self._client = openai_client(key, self.base_url, self.max_attempts, self.timeout)
            return self._client

    def load(self) -> "OpenAIStudent":
        """Build the client and the tokenizer (called by the component's ``initialize``)."""
        _ = self.client
        _ = self.tokenizer
        return self

    # Tokens ---------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The HF tokenizer that measures windows, or None for words and punctuation."""
        with self._lock:
            if not self._tokenizer_loaded:
                self._tokenizer = self._load_tokenizer()
                self._tokenizer_loaded = True
            return self._tokenizer

    def _load_tokenizer(self) -> Any:
        if self.tokenizer_name == WORDS:
            return None
        from transformers import AutoTokenizer

        explicit = self.tokenizer_name is not None
        source = resolve_model(self.tokenizer_name) if explicit else self.model
        local_only = Path(source).exists() or not (explicit and self.allow_download)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as err:
            if explicit:
                hint = "" if self.allow_download else " (downloads are off: allow_download = true)"
                raise OSError(
                    f"Could not load the tokenizer {self.tokenizer_name!r} of the OpenAIStudent"
                    f"{hint}: {err}"
                ) from err
            logger.warning(
                "No local tokenizer for the served model %r: windows are measured in words "
                "and punctuation. Set the student's tokenizer to the model's HF folder or hub "
                "id (or to %r to silence this).",
                self.model,
                WORDS,
            )
            return None
        if not tokenizer.is_fast:
            raise ValueError(
                f"The tokenizer {source!r} is not a fast tokenizer: character offsets are "
                f"needed to cut windows."
            )
        return tokenizer

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        tokenizer = self.tokenizer
        if tokenizer is None:
            return word_offsets(text)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    # Generation -----------------------------------------------------------------

    def submit(self, prompts: Sequence[str]) -> PendingReplies:
        """Send ``prompts``, ``batch_size`` per request, on the student's pool of
        ``concurrency`` threads; RETURNS at once a handle whose ``result()`` gives
        the replies in order."""
        prompts = list(prompts)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="uniner-student"
                )
            pool = self._pool
        chunks = [prompts[i : i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]
        return PendingReplies([pool.submit(self._complete_chunk, chunk) for chunk in chunks])

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """One reply per prompt, in order; requests run concurrently.

        RAISES (StudentServerError): a request failed after every attempt.
        """
        return self.submit(prompts).result() if prompts else []

    def close(self) -> None:
        """Stop the request threads (once their requests are done); a later call starts
        new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete_chunk(self, prompts: List[str]) -> List[Generation]:
        if len(prompts) == 1 or self._takes_lists is False:
            return [self._complete_one(p) for p in prompts]
        import openai

        try:
            response = self._create(prompts)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
            reason = f"HTTP {err.status_code}: {short(err.message)}"
        else:
            if not isinstance(getattr(response, "choices", None), list):
                return [self._malformed() for _ in prompts]
            choices = self._choices_in_order(response.choices, len(prompts))
            if choices is not None:
                self._takes_lists = True
                return [self._to_generation(c) for c in choices]
            reason = f"{len(response.choices)} choices for {len(prompts)} prompts"
        replies = [self._complete_one(p) for p in prompts]  # raises if single prompts fail too
        if self._takes_lists is None:
            self._takes_lists = False
            logger.warning(
                "%s did not answer a list of prompts (%s); sending one prompt per request.",
                self.endpoint,
                reason,
            )
        return replies

    def _complete_one(self, prompt: str) -> Generation:
        import openai

        try:
            response = self._create(prompt)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
            raise StudentServerError(
                f"{self.endpoint} answered HTTP {err.status_code}: {short(err.message)}"
            ) from None
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            return self._malformed()
        return self._to_generation(choices[0])

    def _malformed(self) -> Generation:
        # An empty reply: the component counts it as unparseable, the stream goes on.
        logger.warning("%s sent a reply without completions; counted as empty.", self.endpoint)
        return Generation("")

    def _create(self, prompt: Any) -> Any:
        """One completions request (with the client's retries); openai errors made clear."""
        import openai

        kwargs: Dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "stop": [STOP_MARKER],
        }
        if self.logprobs:
            kwargs["logprobs"] = 1
        attempts = f"{self.max_attempts} attempt{'s' if self.max_attempts > 1 else ''}"
        try:
            return self.client.completions.create(**kwargs)
        except (openai.BadRequestError, openai.UnprocessableEntityError):
            raise  # the caller may retry a rejected list one prompt at a time
        except openai.APIStatusError as err:
            retried = err.status_code in (408, 409, 429) or err.status_code >= 500
            raise StudentServerError(
                f"{self.endpoint} answered HTTP {err.status_code}"
                f"{f' after {attempts}' if retried else ''}: {short(err.message)}"
            ) from None
        except openai.APITimeoutError:
            raise StudentServerError(
                f"{self.endpoint} did not answer within {self.timeout:g} s ({attempts})"
            ) from None
        except openai.APIConnectionError as err:
            raise StudentServerError(
                f"Could not connect to {self.endpoint} ({attempts}): {short(err.__cause__ or err)}"
            ) from None
        except json.JSONDecodeError as err:  # a body that claims to be JSON and is not
            logger.warning("%s sent a body that is not JSON: %s", self.endpoint, err)
            return None

    @staticmethod
    def _choices_in_order(choices: List[Any], n: int) -> Optional[List[Any]]:
        """The ``n`` choices ordered by ``index``, or None if they are not one per prompt."""
        if len(choices) != n:
            return None
        indices = [getattr(c, "index", None) for c in choices]
        if sorted(i for i in indices if isinstance(i, int)) != list(range(n)):
            return None
        return sorted(choices, key=lambda c: c.index)

    def _to_generation(self, choice: Any) -> Generation:
        text = getattr(choice, "text", None)
        if not isinstance(text, str):
            return Generation("")
        lp = getattr(choice, "logprobs", None)
        tokens = getattr(lp, "tokens", None) or []
        values = getattr(lp, "token_logprobs", None) or []
        starts = getattr(lp, "text_offset", None) or []
        if len(tokens) != len(values):
            return finish_reply(text)
        if len(starts) != len(tokens):  # rebuild the offsets from the token strings
            starts, at = [], 0
            for token in tokens:
                starts.append(at)
                at += len(token or "")
        # text_offset counts from the prompt's end (or its start with echo): make it relative.
        base = starts[0] if starts else 0
        offsets = [(s - base, s - base + len(t or "")) for s, t in zip(starts, tokens)]
        return finish_reply(text, offsets, values)

    # Serialization --------------------------------------------------------------

    def to_disk(self, path: Path) -> None:
        """Record where the pipeline's student is served (settings only, no key)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        settings = {
            "model": self.model,
            "base_url": public_url(self.base_url),
            "api_key_env": self.api_key_env,
            "tokenizer": self.tokenizer_name,
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "logprobs": self.logprobs,
        }
        (Path(path) / "student.json").write_text(json.dumps(settings, indent=2))
