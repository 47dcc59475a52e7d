"""``test.ScriptedStudent.v1``: a deterministic model double for pipeline tests.

It answers each query from a table keyed by entity type, records every prompt
it was asked, and can be told to fail on passages that contain a marker. It
tokenises on words and punctuation, so window sizes are easy to reason about.
"""

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

from .models.base import Generation
from .prompts import parse_query
from .registry import uniner_models

_TOKEN = re.compile(r"\w+|[^\w\s]")

class ScriptedStudent:
    def __init__(
        self,
        replies: Dict[str, str],
        default: str = "[]",
        scores: Optional[Dict[str, float]] = None,
        fail_on: Sequence[str] = (),
    ) -> None:
        self.replies = dict(replies)
        self.default = default
        self.scores = dict(scores or {})
        self.fail_on = tuple(fail_on)
        self.prompts: List[str] = []
        self.calls = 0

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        self.calls += 1
        out = []
        for prompt in prompts:
            passage, label = parse_query(prompt)
            for marker in self.fail_on:
                if marker in passage:
                    raise RuntimeError(f"scripted failure on a passage containing {marker!r}")
            self.prompts.append(prompt)
            reply = self.replies.get(label, self.default)
            score = self.scores.get(label)
            if score is None:
                out.append(Generation(reply))
            else:
                out.append(Generation(reply, ((0, len(reply)),), (math.log(score),)))
        return out


@uniner_models("test.ScriptedStudent.v1")
def make_scripted_student_v1(
    replies: Dict[str, str],
    default: str = "[]",
    scores: Optional[Dict[str, float]] = None,
    fail_on: Sequence[str] = (),
) -> ScriptedStudent:
    """replies (Dict[str, str]): the raw reply for each entity type.
    default (str): the reply for types not in ``replies``.
    scores (Optional[Dict[str, float]]): a confidence per type (else 1.0).
    fail_on (Sequence[str]): raise on passages containing any of these strings.
    """
    return ScriptedStudent(replies, default=default, scores=scores, fail_on=fail_on)
