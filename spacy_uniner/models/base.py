"""What a model backend must provide to the component."""

import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from ..parsing import STOP_MARKER

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


def finish_reply(
    text: str,
    offsets: Iterable[Tuple[int, int]] = (),
    logprobs: Iterable[Optional[float]] = (),
) -> Generation:
    """A raw reply as the component reads it: cut at the stop marker, stripped.

    Token offsets follow the cut and the stripped leading whitespace; tokens
    that start at or after the cut (the marker itself, an end-of-sequence
    token that spells nothing) or report no log-probability are left out.
    """
    cut = text.find(STOP_MARKER)
    if cut < 0:
        cut = len(text)
    text = text[:cut]
    shift = len(text) - len(text.lstrip())
    kept = [
        ((max(s - shift, 0), max(min(e, cut) - shift, 0)), float(lp))
        for (s, e), lp in zip(offsets, logprobs)
        if s < cut and lp is not None
    ]
    return Generation(text.strip(), tuple(o for o, _ in kept), tuple(lp for _, lp in kept))


@runtime_checkable
class Student(Protocol):
    """A model backend: turns prompts into replies and measures text in its tokens."""

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """One reply per prompt, in order."""
        ...

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        """Character offsets of the model's tokens over ``text`` (no special tokens)."""
        ...


class PendingGenerations(Protocol):
    """Replies that a student is still working on."""

    def result(self) -> List[Generation]:
        """Block until done; RETURNS one reply per submitted prompt, in order."""
        ...

    def cancel(self) -> None:
        """Give up on replies not yet computed."""
        ...


@runtime_checkable
class SubmittingStudent(Student, Protocol):
    """A student that takes work ahead (e.g. a pool of actors): ``submit`` returns at
    once, and ``UniversalNER.pipe`` keeps up to ``lookahead`` calls waiting on it."""

    lookahead: int

    def submit(self, prompts: Sequence[str]) -> PendingGenerations:
        ...
