"""Grounded decoding: the mentions a student writes are spans of its passage.

Once a reply has opened its JSON list, each next token is the most likely of the
``top_k`` that keep the reply a list of strings (after a string only ``,`` or
``]``, after a comma only a string) and keep an open string where alignment
would find it: the start of a passage word, case and runs of whitespace aside.
A string may close only on a mention alignment finds (so not inside a word:
"Aero" of "Aerosmith" goes on to the word's end or is not written). If none of
the ``top_k`` may follow, an open string is closed (or the list ended) with the
most likely such token. A mention the free model would have written correctly
is left as it is; a hallucinated one becomes a real span or nothing. Before the
list opens (a reply in prose) nothing is constrained.
"""

import json
import re
from typing import Any, List, Optional, Sequence, Tuple

from ..alignment import find_mentions, mention_can_start
from ..parsing import open_string

# Tokens that end a string and at most go on to the next item or the list's end.
_CLOSING = re.compile(r'^"\s*(,\s*"?|\]\s*)?$')

# Where a reply stands in its list, read one character at a time.
_BEFORE, _OPENED, _IN_STRING, _ESCAPE, _AFTER_STRING, _AFTER_COMMA, _CLOSED = range(7)


def list_state(text: str) -> Tuple[Optional[int], int, str]:
    """How ``text`` reads as the start of a JSON list of strings: its state at
    the end (None where the list it opened is malformed), how many strings it
    has closed, and the raw (still escaped) text of the last one. Text before
    the list (prose) and after it is not judged."""
    state, closed, start, last = _BEFORE, 0, 0, ""
    for i, ch in enumerate(text):
        if state == _BEFORE:
            if ch == "[":
                state = _OPENED
        elif state == _IN_STRING:
            if ch == "\\":
                state = _ESCAPE
            elif ch == '"':
                state, closed, last = _AFTER_STRING, closed + 1, text[start:i]
        elif state == _ESCAPE:
            state = _IN_STRING
        elif state == _CLOSED or ch.isspace():
            continue
        elif ch == '"' and state in (_OPENED, _AFTER_COMMA):
            state, start = _IN_STRING, i + 1
        elif ch == "]" and state in (_OPENED, _AFTER_STRING):
            state = _CLOSED
        elif ch == "," and state == _AFTER_STRING:
            state = _AFTER_COMMA
        else:
            return None, closed, last
    return state, closed, last


class GroundedChooser:
    """``SharedDecoder``'s ``choose`` for grounded decoding (see the module docstring).

    passages: per prompt, the passage its mentions must come from (None: that
    prompt decodes freely). closing_ids: the tokenizer's string-closing tokens
    (:func:`closing_token_ids`); end_ids: its list-closing tokens (``]``).
    """

    def __init__(
        self,
        tokenizer: Any,
        passages: Sequence[Optional[str]],
        closing_ids: Sequence[int],
        top_k: int = 20,
        end_ids: Sequence[int] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.passages = list(passages)
        self.closing_ids = list(closing_ids)
        self.end_ids = list(end_ids)
        self.top_k = top_k
        self.forced = 0  # strings closed (lists ended) because no top-k token could go on

    def _read(self, ids: Sequence[int]) -> Tuple[str, Tuple[Optional[int], int, str]]:
        # An incomplete multi-byte character decodes to U+FFFD: judged once whole.
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True).rstrip("\ufffd")
        return text, list_state(text)

    def allowed(self, passage: str, reply: Sequence[int], token: int,
                before: Optional[Tuple[Optional[int], int, str]] = None) -> bool:
        """Whether ``token`` after ``reply`` keeps the list well formed and its
        mentions in ``passage``. before: the reply's :func:`list_state`, if known."""
        text, (state, closed, last) = self._read(list(reply) + [token])
        if state is None:
            return False
        if before is None:
            before = self._read(reply)[1]
        if closed > before[1]:  # this token closes a string (and may open the next)
            try:
                if not find_mentions(passage, json.loads(f'"{last}"')):
                    return False
            except ValueError:
                return False
        if state in (_IN_STRING, _ESCAPE):
            mention = open_string(text)
            return mention is None or mention_can_start(passage, mention)
        return True

    def __call__(self, prompt: int, reply: Sequence[int], logprobs: Any) -> int:
        passage = self.passages[prompt]
        if passage is None:
            return int(logprobs.argmax())
        before = self._read(reply)[1]
        for token in logprobs.topk(min(self.top_k, logprobs.shape[-1])).indices.tolist():
            if self.allowed(passage, reply, token, before):
                return token
        self.forced += 1
        if before[0] in (_IN_STRING, _ESCAPE) or not self.end_ids:
            ids = self.closing_ids
        else:
            ids = self.end_ids
        return ids[int(logprobs[ids].argmax())]


def token_texts(tokenizer: Any) -> List[str]:
    """Each token's text, decoded alone, by id (one pass over the vocabulary)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def closing_token_ids(tokenizer: Any, texts: Optional[Sequence[str]] = None) -> List[int]:
    """Token ids whose text closes a string: ``"``, ``",``, ``"]``, ``", "`` ...
    texts: :func:`token_texts` of the tokenizer, if already made."""
    texts = token_texts(tokenizer) if texts is None else texts
    ids = [i for i, text in enumerate(texts) if _CLOSING.match(text)]
    if not ids:
        raise ValueError("the tokenizer has no token that closes a JSON string")
    return ids


def end_token_ids(tokenizer: Any, texts: Optional[Sequence[str]] = None) -> List[int]:
    """Token ids whose text closes a list outside a string: ``]``, `` ]`` ..."""
    texts = token_texts(tokenizer) if texts is None else texts
    return [i for i, text in enumerate(texts) if text.strip() == "]"]
