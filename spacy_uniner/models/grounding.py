"""Grounded decoding: the mentions a student writes are substrings of its passage.

While a reply writes a string (a mention inside its JSON list), each next token
is the most likely of the ``top_k`` that keep the open string a substring of
the passage (compared as alignment does: case and runs of whitespace aside);
a token that closes the string, or writes outside one, is always allowed. If
none of the ``top_k`` may follow, the string is closed with the most likely
closing token. A mention the free model would have written correctly is left
as it is; a hallucinated one becomes a real span or nothing.
"""

import re
from typing import Any, List, Optional, Sequence

from ..parsing import open_string

_SPACE = re.compile(r"\s+")
# Tokens that end a string and at most go on to the next item or the list's end.
_CLOSING = re.compile(r'^"\s*(,\s*"?|\]\s*)?$')


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text.lower())


class GroundedChooser:
    """``SharedDecoder``'s ``choose`` for grounded decoding (see the module docstring).

    passages: per prompt, the passage its mentions must come from (None: that
    prompt decodes freely). closing_ids: the tokenizer's string-closing tokens
    (:func:`closing_token_ids`).
    """

    def __init__(
        self,
        tokenizer: Any,
        passages: Sequence[Optional[str]],
        closing_ids: Sequence[int],
        top_k: int = 20,
    ) -> None:
        self.tokenizer = tokenizer
        self.passages = [None if p is None else _norm(p) for p in passages]
        self.closing_ids = list(closing_ids)
        self.top_k = top_k
        self.forced = 0  # strings closed because no top-k token could go on

    def allowed(self, passage: str, reply: Sequence[int], token: int) -> bool:
        """Whether ``token`` after ``reply`` keeps any open string in ``passage``."""
        # An incomplete multi-byte character decodes to U+FFFD: judged once whole.
        text = self.tokenizer.decode(list(reply) + [token], skip_special_tokens=True)
        mention = open_string(text.rstrip("\ufffd"))
        return mention is None or _norm(mention) in passage

    def __call__(self, prompt: int, reply: Sequence[int], logprobs: Any) -> int:
        passage = self.passages[prompt]
        if passage is None:
            return int(logprobs.argmax())
        for token in logprobs.topk(min(self.top_k, logprobs.shape[-1])).indices.tolist():
            if self.allowed(passage, reply, token):
                return token
        self.forced += 1
        closing = logprobs[self.closing_ids]
        return self.closing_ids[int(closing.argmax())]


def closing_token_ids(tokenizer: Any) -> List[int]:
    """Token ids whose text closes a string: ``"``, ``",``, ``"]``, ``", "`` ..."""
    ids = [i for i in range(len(tokenizer)) if _CLOSING.match(tokenizer.decode([i]))]
    if not ids:
        raise ValueError("the tokenizer has no token that closes a JSON string")
    return ids
