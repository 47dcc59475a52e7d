"""API keys that never print: shared by the teacher and the OpenAI-compatible student."""

import os
from typing import Optional


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
