"""Test doubles: students for pipeline tests, registered under the ``test.`` namespace.

Nothing in the product imports this module (``spacy_uniner/__init__.py`` does
not). Its students are registered as entry points (``test.ScriptedStudent.v1``,
``test.ExitOnceStudent.v1``, like spacy-llm's ``NoOp`` model) because tests
that run a pipeline in another process (Ray actors, a fresh interpreter) must
resolve them by name from a saved config.

* :class:`ScriptedStudent` answers each query from a table keyed by entity
  type, records every prompt it was asked, and can be told to fail on passages
  that contain a marker. It measures text in words and punctuation
  (:func:`spacy_uniner.passages.word_offsets`), so window sizes are easy to
  reason about.
* :class:`ExitOnceStudent` wraps a student and ends its process once, to test
  what happens when a Ray actor dies.

To serve a student over the OpenAI completions API (for
``spacy_uniner.OpenAIStudent.v1``), use
``spacy_uniner.openai_server.OpenAIServer(student=ScriptedStudent(...))``.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .models.base import Generation
from .passages import word_offsets
from .prompts import parse_query
from .registry import uniner_models


class ScriptedStudent:
    """Replies from a table keyed by entity type (see the module's docstring)."""

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
        return word_offsets(text)

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


class ExitOnceStudent:
    """Wraps a student; the first prompt whose passage holds ``marker`` ends the
    process with ``os._exit(1)``, as a crashed Ray actor would. ``flag_file``
    (created atomically) makes it happen once across all processes, so the retry
    on a fresh actor succeeds. Only for students running in Ray actors."""

    def __init__(self, student: Any, marker: str, flag_file: str) -> None:
        self.student = student
        self.marker = marker
        self.flag_file = flag_file

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return self.student.token_offsets(text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        import os

        for prompt in prompts:
            if self.marker in parse_query(prompt)[0]:
                try:
                    os.close(os.open(self.flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    break
                os._exit(1)
        return self.student.generate(prompts)


@uniner_models("test.ExitOnceStudent.v1")
def make_exit_once_student_v1(student: Any, marker: str, flag_file: str) -> ExitOnceStudent:
    """student: the student block to wrap.
    marker (str): a passage containing this ends the process, once.
    flag_file (str): created when it happens; while it exists nothing happens.
    """
    return ExitOnceStudent(student, marker, flag_file)
