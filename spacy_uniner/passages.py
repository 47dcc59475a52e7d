"""Text into passages: one cut for the teacher, for training and for inference.

A document is cut into windows of at most ``max_tokens`` tokens of the
student's tokenizer. A window ends where a sentence starts if one is in the
second half of its reach, else between words, else between tokens; consecutive
windows may share up to ``overlap`` tokens (starting, where possible, at a
sentence or a word), so a mention cut by one window's end is whole in the
next. Nothing is dropped: every token is in some window. A window is the text
between its first and its last token, without surrounding whitespace.

* The component (:class:`spacy_uniner.component.UniversalNER`) asks the student
  about every window (``max_passage_tokens``, ``window_overlap``).
* The teacher (``ray_jobs.annotate``) asks about every passage
  (:class:`Chunker`: the same windows, without overlap by default), and those
  passages are what the student is trained on.

So the student is trained on passages cut the way it will read them;
``tests/test_passages.py`` checks that the teacher's passages and the
component's windows of one document are identical.

Sentences: ``.``, ``!`` or ``?`` (and their CJK forms), closing quotes or
brackets, then whitespace, except after a common abbreviation or an initial
("Dr. Smith", "J. Smith"); a line break also starts one.
"""

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

#: Words and punctuation: how text is measured without a model's tokenizer.
WORD = re.compile(r"\w+|[^\w\s]")
_SENTENCE_BREAK = re.compile(r"[.!?\u3002\uFF01\uFF1F][\"'\u201d\u2019)\]]*\s+|\n\s*")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|vs|etc|No|Inc|Ltd|Co|Fig|al|e\.g|i\.e)|\b[A-Z])\.$"
)
#: Why a window ends where it does (``Window.cut``).
CUTS = ("end", "sentence", "space", "token")


def word_offsets(text: str) -> List[Tuple[int, int]]:
    """Character offsets of the words and punctuation marks of ``text`` (:data:`WORD`)."""
    return [m.span() for m in WORD.finditer(text)]


def tokenizer_offsets(tokenizer: Any, text: str) -> List[Tuple[int, int]]:
    """Character offsets of a Hugging Face tokenizer's tokens over ``text`` (no special tokens)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def sentence_starts(text: str) -> List[int]:
    """Character offsets where a sentence starts (after the first), in order."""
    starts = []
    for m in _SENTENCE_BREAK.finditer(text):
        dot = m.start()
        if text[dot] == "." and _ABBREVIATION.search(text[max(0, dot - 7) : dot + 1]):
            continue  # "Dr. Smith", "J. Smith": not a boundary
        starts.append(m.end())
    return starts


@dataclass(frozen=True)
class Window:
    """A slice ``text[start:end]`` of a document, read by the model as one passage.

    cut: why the window ends there (:data:`CUTS`): the end of the text, the start
        of a sentence, a space between words, or (a word longer than a window) a
        token boundary. Not part of equality.
    """

    start: int
    end: int
    cut: str = field(default="end", compare=False)


def make_windows(
    text: str,
    token_offsets: Sequence[Tuple[int, int]],
    max_tokens: int,
    overlap: int,
) -> List[Window]:
    """Cut ``text`` into windows of at most ``max_tokens`` tokens.

    token_offsets (Sequence[Tuple[int, int]]): character offsets of the student
        tokenizer's tokens over ``text``.
    max_tokens (int): the most tokens a window may hold.
    overlap (int): how many tokens consecutive windows may share, so that a
        mention cut by one window's end is whole in the next one.
    RETURNS (List[Window]): windows in order, covering every token.
    """
    if max_tokens < 1:
        raise ValueError(f"max_passage_tokens must be positive, got {max_tokens}")
    if not 0 <= overlap < max_tokens // 2 + 1:
        raise ValueError(
            f"window_overlap must be between 0 and half of max_passage_tokens "
            f"({max_tokens // 2}), got {overlap}"
        )
    if not text.strip():
        return []
    n = len(token_offsets)
    if n <= max_tokens:
        return [_trimmed(text, 0, len(text), "end")]
    ends = [end for _, end in token_offsets]
    starts_at = sorted({bisect.bisect_right(ends, c) for c in sentence_starts(text)} - {0, n})
    space_starts = [
        i for i in range(1, n) if text[token_offsets[i][0] : token_offsets[i][0] + 1].isspace()
        or text[token_offsets[i][0] - 1 : token_offsets[i][0]].isspace()
    ]

    def last_in(cands: List[int], lo: int, hi: int) -> int:
        j = bisect.bisect_right(cands, hi) - 1
        return cands[j] if j >= 0 and cands[j] > lo else -1

    def first_in(cands: List[int], lo: int, hi: int) -> int:
        j = bisect.bisect_left(cands, lo)
        return cands[j] if j < len(cands) and cands[j] <= hi else -1

    spans: List[Tuple[int, int, str]] = []
    start = 0
    while True:
        hard = start + max_tokens
        if hard >= n:
            spans.append((start, n, "end"))
            break
        lo = start + max_tokens // 2
        end, cut = last_in(starts_at, lo, hard), "sentence"
        if end < 0:
            end, cut = last_in(space_starts, lo, hard), "space"
        if end < 0:
            end, cut = hard, "token"
        spans.append((start, end, cut))
        nxt = -1
        if overlap:
            nxt = first_in(starts_at, end - overlap, end)
            if nxt < 0:
                nxt = first_in(space_starts, end - overlap, end)
        if nxt < 0:
            nxt = end - overlap
        start = max(nxt, start + 1)
    windows = []
    for i, (s, e, cut) in enumerate(spans):
        c0 = 0 if i == 0 else token_offsets[s][0]
        c1 = len(text) if e == n else token_offsets[e - 1][1]
        windows.append(_trimmed(text, c0, c1, cut))
    return windows


def _trimmed(text: str, start: int, end: int, cut: str) -> Window:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Window(start, end, cut)


def passage_hash(text: str) -> str:
    """A passage's identity for caches and de-duplication: 32 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Passage:
    """One window of a document with its text: what the teacher is asked about.

    id: ``{document id}:{k}`` for the document's k-th window.
    text: ``document[start:end]``.
    n_tokens: its length in student tokens (counted in the document).
    cut: why it ends there (:attr:`Window.cut`).
    """

    id: str
    text: str
    n_tokens: int = 0
    start: int = 0
    end: int = 0
    cut: str = "end"

    @property
    def hash(self) -> str:
        return passage_hash(self.text)


class Chunker:
    """Cut documents into :class:`Passage` objects with the student's tokenizer.

    tokenizer: a Hugging Face tokenizer (the student's).
    max_tokens (int): the most tokens a passage may hold (the component's
        ``max_passage_tokens``).
    overlap (int): tokens consecutive passages may share (the component's
        ``window_overlap``; 0 for the teacher, which should not be asked twice).
    """

    def __init__(self, tokenizer: Any, max_tokens: int = 256, overlap: int = 0) -> None:
        make_windows("x", [(0, 1)], max_tokens, overlap)  # validates both
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap

    def chunk(self, doc_id: str, text: str) -> List[Passage]:
        """RETURNS the passages of ``text``, verbatim slices, each ≤ ``max_tokens`` tokens."""
        offsets = tokenizer_offsets(self.tokenizer, text)
        ends = [end for _, end in offsets]
        passages = []
        for k, w in enumerate(make_windows(text, offsets, self.max_tokens, self.overlap)):
            n_tokens = bisect.bisect_right(ends, w.end) - bisect.bisect_right(ends, w.start)
            passages.append(
                Passage(f"{doc_id}:{k}", text[w.start : w.end], n_tokens, w.start, w.end, w.cut)
            )
        return passages
