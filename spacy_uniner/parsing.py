"""Bounded, literal-only parsing of model replies.

Student replies are JSON lists of mention strings; teacher replies are
Python-ish lists of ``("entity", "type")`` tuples. Both come from a model, so
they are data: they are parsed with :mod:`json` and :func:`ast.literal_eval`
(literals only, never ``eval``), after a bounded scan that locates the list and
refuses deep nesting. Usual damage is repaired and reported in
``ParsedReply.repairs``: prose around the list, a truncated list (complete items
are kept), single quotes. A reply that yields no list at all is
``ok=False`` with the reason in ``error`` — never silently an empty answer.

While a reply is being written, :func:`answer_complete` says whether it is
finished and :func:`open_string` reads the mention it is in the middle of.
"""

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Tuple

from .prompts import SEP2

MAX_REPLY_CHARS = 2_000_000
MAX_ITEMS = 20_000
MAX_DEPTH = 8
#: Where a student's answer ends: the conversation's turn separator (prompts.SEP2).
STOP_MARKER = SEP2


@dataclass
class ParsedReply:
    items: List[Any] = field(default_factory=list)
    ok: bool = True
    error: Optional[str] = None
    repairs: List[str] = field(default_factory=list)
    # Items present in the list but not usable (wrong type, empty, over the cap).
    dropped: int = 0


class _Scan:
    """Where the first list in ``text`` ends, and its top-level item separators."""

    def __init__(self, text: str, start: int) -> None:
        self.end: Optional[int] = None  # index of the matching "]", None if truncated
        self.commas: List[int] = []  # top-level commas
        self.max_depth = 0
        depth = 0
        quote: Optional[str] = None
        escaped = False
        for i in range(start, len(text)):
            ch = text[i]
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = None
                continue
            if ch in "\"'":
                # An apostrophe inside a bare word (don't) opens no string.
                if ch == "'" and i > 0 and text[i - 1].isalnum():
                    continue
                quote = ch
            elif ch in "[(":
                depth += 1
                self.max_depth = max(self.max_depth, depth)
            elif ch in "])":
                depth -= 1
                if depth == 0:
                    self.end = i
                    return
            elif ch == "," and depth == 1:
                self.commas.append(i)


def list_closed(text: str) -> bool:
    """Whether ``text`` holds a list whose closing bracket has been written."""
    start = text.find("[")
    return start >= 0 and _Scan(text, start).end is not None


_DONE_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"\s*,')


def list_repeats(text: str) -> bool:
    """Whether the list ``text`` opened already repeats a finished string item.

    A greedy student that lists a mention twice is looping; its later items add
    nothing (mentions are found at every occurrence anyway), so a reply can end
    there and be read as a truncated list.
    """
    start = text.find("[")
    if start < 0:
        return False
    seen = set()
    for match in _DONE_ITEM.finditer(text, start):
        if match.group(1) in seen:
            return True
        seen.add(match.group(1))
    return False


def answer_complete(text: str, stop: str = STOP_MARKER) -> bool:
    """Whether a partial reply is finished: it holds the stop marker, a closed list,
    or a list that repeats an item (a greedy loop)."""
    return stop in text or list_closed(text) or list_repeats(text)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def open_string(text: str) -> Optional[str]:
    """The (JSON-unescaped) content of a string still open at the end of
    ``text``, else None. An escape cut off at the end is left out."""
    inside = False
    buf: List[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if not inside:
            if ch == '"':
                inside, buf = True, []
            i += 1
        elif ch == '"':
            inside = False
            i += 1
        elif ch == "\\":
            esc = text[i + 1 : i + 2]
            if esc == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) < 4:
                    break
                try:
                    buf.append(chr(int(digits, 16)))
                except ValueError:
                    buf.append(digits)
                i += 6
            else:
                buf.append(_ESCAPES.get(esc, esc))
                i += 2
        else:
            buf.append(ch)
            i += 1
    return "".join(buf) if inside else None


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    # CPython 3.11 can raise a spurious SystemError ("AST constructor recursion
    # depth mismatch", gh-106905) when other threads are alive (Ray, servers):
    # one more try, then the reply counts as unparseable instead of crashing.
    for _ in range(2):
        try:
            return ast.literal_eval(text)
        except SystemError:
            continue
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return None


def _find_list(reply: str) -> Tuple[Optional[list], List[str], Optional[str]]:
    """Return (list or None, repairs, error)."""
    repairs: List[str] = []
    if len(reply) > MAX_REPLY_CHARS:
        return None, repairs, f"reply longer than {MAX_REPLY_CHARS} characters"
    text = reply.strip()
    if STOP_MARKER in text:
        text = text[: text.index(STOP_MARKER)].rstrip()
    if not text:
        return None, repairs, "empty reply"
    start = text.find("[")
    if start < 0:
        return None, repairs, "no list in reply"
    if start > 0:
        repairs.append("text before list")
    scan = _Scan(text, start)
    if scan.max_depth > MAX_DEPTH:
        return None, repairs, f"list nested deeper than {MAX_DEPTH}"
    if scan.end is not None:
        if text[scan.end + 1 :].strip():
            repairs.append("text after list")
        candidate = text[start : scan.end + 1]
        value = _literal(candidate)
        if isinstance(value, (list, tuple)):
            if not _is_json(candidate):
                repairs.append("python literal")
            return list(value), repairs, None
        return None, repairs, "list is not a valid literal"
    # Truncated: keep the items before the last complete top-level separator.
    repairs.append("truncated list")
    for cut in reversed(scan.commas):
        value = _literal(text[start:cut] + "]")
        if isinstance(value, list):
            return value, repairs, None
    value = _literal(text[start:].rstrip().rstrip(",") + "]")
    if isinstance(value, list):
        return value, repairs, None
    if not scan.commas and text[start + 1 :].strip() == "":
        return [], repairs, None
    return None, repairs, "truncated list with no complete item"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _as_mention(item: Any) -> Optional[str]:
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, (int, float)):
        return str(item)
    if isinstance(item, str):
        return item.strip() or None
    return None


def _read_list(
    reply: Any, read_value: Callable[[Any, "ParsedReply"], Iterable[Optional[Any]]]
) -> ParsedReply:
    """Find the list in ``reply``; keep what ``read_value`` makes of each value, in order
    and once each. What it makes None, or what comes over :data:`MAX_ITEMS`, is dropped
    and counted. A reply without a list is ``ok=False`` with the reason."""
    if not isinstance(reply, str):
        return ParsedReply(ok=False, error=f"reply is {type(reply).__name__}, not str")
    values, repairs, error = _find_list(reply)
    if values is None:
        return ParsedReply(ok=False, error=error, repairs=repairs)
    result = ParsedReply(repairs=repairs)
    seen = set()
    for value in values:
        for kept in read_value(value, result):
            if kept is None or len(result.items) >= MAX_ITEMS:
                result.dropped += 1
            elif kept not in seen:
                seen.add(kept)
                result.items.append(kept)
    result.repairs = list(dict.fromkeys(result.repairs))
    return result


def _mentions(value: Any, result: ParsedReply) -> List[Optional[str]]:
    if isinstance(value, (list, tuple)):
        result.repairs.append("nested list")
        return [_as_mention(item) for item in value]
    return [_as_mention(value)]


def _pair(value: Any, result: ParsedReply) -> List[Optional[Tuple[str, str]]]:
    if isinstance(value, (list, tuple)) and len(value) >= 2 and all(
        isinstance(part, str) and part.strip() for part in value[:2]
    ):
        return [(value[0].strip(), value[1].strip())]
    return [None]


def parse_student_reply(reply: str) -> ParsedReply:
    """Parse a student answer such as ``["Ada Lovelace", "Charles Babbage"]``.

    Strings are kept (stripped, de-duplicated in order); numbers become their
    string; one level of nested lists is flattened; anything else is dropped
    and counted.
    """
    return _read_list(reply, _mentions)


def parse_teacher_reply(reply: str) -> ParsedReply:
    """Parse a teacher answer ``[("entity 1", "type of entity 1"), ...]``.

    Items become ``(mention, type)`` tuples of stripped strings; items that
    are not a pair of strings are dropped and counted. Exact duplicates are
    kept once.
    """
    return _read_list(reply, _pair)
