"""The Pile-NER passages held out for the dev suite: one split, for evaluation and training.

Every modelling choice is made on the dev suite (DESIGN.md, "Dev suite vs test
suite"), and one of its sets is a share of the Pile-NER passages that training
never sees. :func:`split_pile_ner` decides which: ``eval.benchmark --suite dev``
asks its dev side, ``train.build_data`` trains on its train side only (unless
told otherwise).

A passage's side depends on its text alone (whitespace collapsed, hashed with
a fixed seed): it does not change when the file is reordered, grows or is
read by another reader, and two copies of one text always fall on the same
side. The dev share is therefore close to, not exactly,
:data:`PILE_DEV_FRACTION` (131 of the 882 passages of the shared subset, 199
of its 1,320 queries).
"""

import hashlib
from typing import Iterable, List, NamedTuple, Protocol, TypeVar

#: Share of the Pile-NER passages held out for the dev suite.
PILE_DEV_FRACTION = 0.15
#: Seed of the split; changing it changes every dev-suite number and every training set.
PILE_DEV_SEED = 0


class _HasText(Protocol):
    @property
    def text(self) -> str: ...


T = TypeVar("T", bound=_HasText)


class Split(NamedTuple):
    train: List
    dev: List


def _dev_score(text: str, seed: int) -> float:
    key = f"{seed}:{' '.join(text.split())}".encode("utf8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0 ** 64


def split_pile_ner(
    passages: Iterable[T], *, fraction: float = PILE_DEV_FRACTION, seed: int = PILE_DEV_SEED
) -> Split:
    """Split passages into (train, dev) by their text, order kept within each side.

    passages: anything with a ``text`` attribute (the training reader's and the
        benchmark loader's passages alike).
    fraction: the expected dev share (each passage is dev with this probability).
    seed: the split's seed.
    RETURNS (Split): ``train`` and ``dev`` lists.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    train, dev = [], []
    for p in passages:
        (dev if _dev_score(p.text, seed) < fraction else train).append(p)
    return Split(train, dev)


def outside(passages: Iterable[T], held_out: Iterable[_HasText]) -> Split:
    """Split ``passages`` into those clear of ``held_out`` and those that overlap it:
    the same text, a window cut from it (teacher passages are cut from documents), or
    a text holding it; whitespace is compared loosely."""
    held = [" ".join(h.text.split()) for h in held_out]
    clear, overlapping = [], []
    for p in passages:
        text = " ".join(p.text.split())
        hit = any(text in h or h in text for h in held)
        (overlapping if hit else clear).append(p)
    return Split(clear, overlapping)


__all__ = ["PILE_DEV_FRACTION", "PILE_DEV_SEED", "Split", "outside", "split_pile_ner"]
