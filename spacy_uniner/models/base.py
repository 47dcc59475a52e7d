"""What a model backend must provide to the component."""

import math
from dataclasses import dataclass
from typing import List, Protocol, Sequence, Tuple, runtime_checkable


@dataclass(frozen=True)
class Generation:
    """One reply of the student, with per-token log-probabilities where known.

    token_offsets[i] is the character range of generated token i in ``text``.
    """

    text: str
    token_offsets: Tuple[Tuple[int, int], ...] = ()
    token_logprobs: Tuple[float, ...] = ()

    def confidence(self, start: int, end: int) -> float:
        """Geometric-mean probability of the tokens that overlap ``text[start:end]``.

        Falls back to the whole reply when no token overlaps, and to 1.0 for
        backends that report no probabilities.
        """
        if not self.token_logprobs:
            return 1.0
        picked = [
            lp
            for (s, e), lp in zip(self.token_offsets, self.token_logprobs)
            if s < end and e > start
        ] or list(self.token_logprobs)
        return float(math.exp(sum(picked) / len(picked)))


@runtime_checkable
class Student(Protocol):
    """A model backend: turns prompts into replies and measures text in its tokens."""

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """One reply per prompt, in order."""
        ...

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        """Character offsets of the model's tokens over ``text`` (no special tokens)."""
        ...
