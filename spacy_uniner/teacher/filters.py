"""Safe parsing of teacher replies and the paper's filters (§3.1), every drop counted.

A reply is parsed with :func:`spacy_uniner.parsing.parse_teacher_reply`
(literal-only). Then:

* a reply with no list at all is dropped as ``unparseable_reply`` (the passage
  is kept with no entities only if the list was empty, never by accident);
* items that are not a ``(mention, type)`` pair of strings: ``malformed_item``;
* mentions or types written mostly outside the Latin script: ``non_english``;
* types of the ELSE family (None, NA, MISC, ELSE, other, unknown ...): ``else_type``;
* mentions longer than ``max_mention_chars``: ``overlong_mention``.
"""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Tuple

from ..parsing import parse_teacher_reply

ELSE_TYPES = frozenset(
    {
        "none",
        "na",
        "n a",
        "null",
        "nil",
        "misc",
        "miscellaneous",
        "else",
        "other",
        "others",
        "unknown",
        "not applicable",
        "unspecified",
        "no type",
    }
)
MAX_MENTION_CHARS = 200

DROP_REASONS = (
    "unparseable_reply",
    "malformed_item",
    "non_english",
    "else_type",
    "overlong_mention",
)


@dataclass
class FilteredReply:
    entities: List[Tuple[str, str]] = field(default_factory=list)
    parsed: bool = True
    error: str = ""
    repairs: List[str] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)


def normalise_type(label: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", label.lower()).split())


def is_else_type(label: str) -> bool:
    return normalise_type(label) in ELSE_TYPES


def is_english(text: str) -> bool:
    """True unless most letters of ``text`` are outside the Latin script.

    Accents (Zürich) and a stray Greek letter in a Latin word (α-synuclein)
    pass; Chinese, Cyrillic, Arabic ... strings do not.
    """
    letters = other = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if not ch.isascii() and not unicodedata.name(ch, "").startswith("LATIN"):
                other += 1
    return other * 2 <= letters


def filter_reply(reply: str, max_mention_chars: int = MAX_MENTION_CHARS) -> FilteredReply:
    parsed = parse_teacher_reply(reply)
    result = FilteredReply(repairs=list(parsed.repairs))
    if not parsed.ok:
        result.parsed = False
        result.error = parsed.error or "unparseable"
        result.drops["unparseable_reply"] += 1
        return result
    if parsed.dropped:
        result.drops["malformed_item"] += parsed.dropped
    for mention, label in parsed.items:
        if not (is_english(mention) and is_english(label)):
            result.drops["non_english"] += 1
        elif is_else_type(label):
            result.drops["else_type"] += 1
        elif len(mention) > max_mention_chars:
            result.drops["overlong_mention"] += 1
        else:
            result.entities.append((mention, label))
    return result
