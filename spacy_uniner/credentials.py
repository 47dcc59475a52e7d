"""API keys and endpoints that never print, and the ``openai`` client built from
them: shared by the teacher and the OpenAI-compatible student."""

import os
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

LOCAL_PLACEHOLDER_KEY = "sk-no-key"  # what the openai client gets when no key is set


class Secret:
    """A string that does not print."""

    __slots__ = ("_value",)

    def __init__(self, value: Optional[str]) -> None:
        self._value = value

    def get(self) -> Optional[str]:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret(None)"

    __str__ = __repr__

    @classmethod
    def from_env(cls, name: str = "OPENAI_API_KEY") -> "Secret":
        return cls(os.environ.get(name) or None)


def openai_client(
    api_key: Secret, base_url: Optional[str], max_attempts: int, timeout: float, **kwargs: Any
) -> Any:
    """An ``openai.OpenAI`` client whose own retries (exponential backoff with
    jitter, ``Retry-After`` honoured, on 408/409/429/5xx, timeouts and
    connection errors) make ``max_attempts`` attempts per request."""
    try:
        import openai
    except ImportError as err:
        raise ImportError(
            "Talking to an OpenAI-compatible server needs the openai package: "
            "pip install 'spacy-uniner[openai]'"
        ) from err
    return openai.OpenAI(
        api_key=api_key.get() or LOCAL_PLACEHOLDER_KEY,
        base_url=base_url,
        max_retries=max_attempts - 1,
        timeout=timeout,
        **kwargs,
    )


def public_url(url: str) -> str:
    """``url`` without a password, should one be embedded in it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def short(text: Any, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (for error messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"
