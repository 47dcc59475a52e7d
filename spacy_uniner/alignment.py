"""From mention strings to character spans.

A mention becomes *every* occurrence in the passage the model read. Matching
is exact first; whitespace inside a mention matches any run of whitespace (the
benchmark files are pre-tokenised, models often are not); if nothing matches,
a case-insensitive match is tried. Occurrences must sit on word boundaries in
scripts that separate words with spaces (so "art" is not found inside
"party"); in scripts written without spaces (CJK, Thai, kana) any substring
counts.

Long texts are cut into windows by :mod:`spacy_uniner.passages`.
"""

import re
from functools import lru_cache
from typing import List, Tuple

# Scripts written without spaces between words: any substring may be a word.
_UNSPACED = ((0x0E00, 0x0E7F), (0x2E80, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
             (0xFF00, 0xFFEF))


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


def _begins_word(text: str, start: int) -> bool:
    """Whether a mention may start at ``text[start]``: not inside a word of a
    script that separates words with spaces."""
    return not (start > 0 and _spaced_word_char(text[start]) and _spaced_word_char(text[start - 1]))


def _on_boundaries(text: str, start: int, end: int) -> bool:
    if not _begins_word(text, start):
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


def mention_can_start(text: str, prefix: str) -> bool:
    """Whether a mention still being written, ``prefix`` so far, can become one
    :func:`find_mentions` finds: some occurrence in ``text`` (case and runs of
    whitespace aside) begins a word, and a trailing space is followed by one."""
    stripped = prefix.strip()
    if not stripped:
        return True
    for m in _pattern(stripped, True).finditer(text):
        start, end = m.span(1)
        if _begins_word(text, start) and (
            not prefix[-1].isspace() or (end < len(text) and text[end].isspace())
        ):
            return True
    return False
