"""From mention strings to character spans, and from long texts to windows.

A mention becomes *every* occurrence in the passage the model read. Matching
is exact first; whitespace inside a mention matches any run of whitespace (the
benchmark files are pre-tokenised, models often are not); if nothing matches,
a case-insensitive match is tried. Occurrences must sit on word boundaries in
scripts that separate words with spaces (so "art" is not found inside
"party"); in scripts written without spaces (CJK, Thai, kana) any substring
counts.

Long texts are cut into overlapping windows of at most ``max_tokens`` student
tokens, preferring sentence boundaries, then whitespace; nothing is truncated.
"""

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Sequence, Tuple

# Scripts written without spaces between words: any substring may be a word.
_UNSPACED = ((0x0E00, 0x0E7F), (0x2E80, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
             (0xFF00, 0xFFEF))
_SENTENCE_BREAK = re.compile(r"[.!?\u3002\uFF01\uFF1F][\"'\u201d\u2019)\]]*\s+|\n\s*")


def _spaced_word_char(ch: str) -> bool:
    """A word character of a script that separates words with spaces."""
    if not (ch.isalnum() or ch == "_"):
        return False
    code = ord(ch)
    return not any(lo <= code <= hi for lo, hi in _UNSPACED)


@lru_cache(maxsize=4096)
def _pattern(mention: str, ignore_case: bool) -> "re.Pattern[str]":
    # A lookahead finds every start, overlapping ones too; boundaries are checked after.
    body = r"\s+".join(re.escape(p) for p in mention.split())
    return re.compile(f"(?=({body}))", re.IGNORECASE if ignore_case else 0)


def _on_boundaries(text: str, start: int, end: int) -> bool:
    if _spaced_word_char(text[start]) and start > 0 and _spaced_word_char(text[start - 1]):
        return False
    if _spaced_word_char(text[end - 1]) and end < len(text) and _spaced_word_char(text[end]):
        return False
    return True


def find_mentions(text: str, mention: str) -> List[Tuple[int, int]]:
    """Character offsets of every (non-overlapping) occurrence of ``mention`` in ``text``."""
    if not mention or not mention.strip() or not text:
        return []
    for ignore_case in (False, True):
        found: List[Tuple[int, int]] = []
        for m in _pattern(mention.strip(), ignore_case).finditer(text):
            start, end = m.span(1)
            if (not found or start >= found[-1][1]) and _on_boundaries(text, start, end):
                found.append((start, end))
        if found:
            return found
    return []


@dataclass(frozen=True)
class Window:
    """A slice ``text[start:end]`` of a document, sent to the model as one passage."""

    start: int
    end: int


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
        return [Window(0, len(text))]
    ends = [end for _, end in token_offsets]
    sentence_starts = sorted(
        {bisect.bisect_right(ends, m.end()) for m in _SENTENCE_BREAK.finditer(text)} - {0, n}
    )
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

    spans: List[Tuple[int, int]] = []
    start = 0
    while True:
        hard = start + max_tokens
        if hard >= n:
            spans.append((start, n))
            break
        lo = start + max_tokens // 2
        end = last_in(sentence_starts, lo, hard)
        if end < 0:
            end = last_in(space_starts, lo, hard)
        if end < 0:
            end = hard
        spans.append((start, end))
        nxt = -1
        if overlap:
            nxt = first_in(sentence_starts, end - overlap, end)
            if nxt < 0:
                nxt = first_in(space_starts, end - overlap, end)
        if nxt < 0:
            nxt = end - overlap
        start = max(nxt, start + 1)
    windows = []
    for i, (s, e) in enumerate(spans):
        c0 = 0 if i == 0 else token_offsets[s][0]
        c1 = len(text) if e == n else token_offsets[e - 1][1]
        windows.append(Window(c0, c1))
    return windows
