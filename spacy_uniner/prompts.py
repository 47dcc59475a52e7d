"""The UniNER conversation, rendered for inference and for training.

One module renders every prompt the student sees, so training and inference
cannot drift apart. The format is FastChat's ``ie_as_qa`` template used by the
released UniNER checkpoints (separators ``" "`` and ``"</s>"``)::

    A virtual assistant answers questions from a user based on the provided
    text. USER: Text: {passage} ASSISTANT: I've read this text.</s>USER: What
    describes {type} in the text? ASSISTANT:

Variants (all rendered here):

* **type** (default): the question names an entity type.
* **definition**: the question names a short sentence that defines the type;
  pass the definition as the ``label`` (see :func:`definition_query`).
* **all-in-one**: one question for all types; the answer is a JSON list of
  ``[mention, type]`` pairs (see :func:`ALL_IN_ONE_QUESTION`).
* **dataset-specific**: a ``Dataset: {name}`` line before the text, used for
  human-labelled training sets; omitted in zero-shot use.
"""

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

SYSTEM = "A virtual assistant answers questions from a user based on the provided text."
USER = "USER"
ASSISTANT = "ASSISTANT"
SEP = " "
SEP2 = "</s>"
ACK = "I've read this text."
QUESTION = "What describes {label} in the text?"
ALL_IN_ONE_QUESTION = (
    "What describes {labels} in the text? Answer with a JSON list of [entity, type] pairs."
)
PROMPT_VERSION = "uniner-ie_as_qa.v1"


@dataclass(frozen=True)
class Turn:
    """One question and (for training) its answer."""

    question: str
    answer: Optional[str] = None


def passage_message(passage: str, dataset: Optional[str] = None) -> str:
    """The first user message: the passage, with the dataset name if given."""
    if dataset:
        return f"Dataset: {dataset}\nText: {passage}"
    return f"Text: {passage}"


def question(label: str) -> str:
    """The per-type question. A definition variant passes the definition as label."""
    return QUESTION.format(label=label)


def all_in_one_question(labels: Sequence[str]) -> str:
    return ALL_IN_ONE_QUESTION.format(labels=", ".join(labels))


def render_prefix(passage: str, dataset: Optional[str] = None) -> str:
    """Everything up to the first question: shared by every query of a passage."""
    return (
        f"{SYSTEM}{SEP}{USER}: {passage_message(passage, dataset)}{SEP}"
        f"{ASSISTANT}: {ACK}{SEP2}"
    )


def render_turn(turn: Turn) -> str:
    """One question turn; an unanswered turn ends with ``ASSISTANT:`` for generation."""
    text = f"{USER}: {turn.question}{SEP}{ASSISTANT}:"
    if turn.answer is not None:
        text += f" {turn.answer}{SEP2}"
    return text


def render_conversation(
    passage: str, turns: Iterable[Turn], dataset: Optional[str] = None
) -> str:
    """A whole conversation: the prefix, then each turn in order."""
    return render_prefix(passage, dataset) + "".join(render_turn(t) for t in turns)


def render_query(passage: str, label: str, dataset: Optional[str] = None) -> str:
    """The inference prompt for one entity type (or definition)."""
    return render_conversation(passage, [Turn(question(label))], dataset)


def training_segments(
    passage: str, turns: Sequence[Turn], dataset: Optional[str] = None
) -> List[Tuple[str, bool]]:
    """A training conversation cut into ``(text, carries_loss)`` pieces.

    Only the answers and their end marker carry loss; the concatenation of the
    pieces equals :func:`render_conversation` on the same turns.
    """
    segments: List[Tuple[str, bool]] = []
    context = render_prefix(passage, dataset)
    for turn in turns:
        if turn.answer is None:
            raise ValueError(f"Training turn without an answer: {turn.question!r}")
        context += f"{USER}: {turn.question}{SEP}{ASSISTANT}:"
        segments.append((context, False))
        segments.append((f" {turn.answer}{SEP2}", True))
        context = ""
    return segments


def _question_pattern() -> str:
    before, after = QUESTION.split("{label}")
    return re.escape(before) + "(?P<label>.+)" + re.escape(after)


_QUESTION_RE = re.compile(f"^{_question_pattern()}$", re.S)
# A single-query prompt, from the passage on (a dataset line may precede "Text: ").
_QUERY_RE = re.compile(
    re.escape("Text: ") + "(?P<passage>.*)"
    + re.escape(f"{SEP}{ASSISTANT}: {ACK}{SEP2}{USER}: ")
    + _question_pattern() + re.escape(f"{SEP}{ASSISTANT}:") + "$",
    re.S,
)


def question_label(text: str) -> Optional[str]:
    """The type a question "What describes {type} in the text?" asks about, else None."""
    match = _QUESTION_RE.match(text)
    return match.group("label") if match else None


def parse_query(prompt: str) -> Tuple[str, str]:
    """The (passage, label) of a prompt made by :func:`render_query`."""
    match = _QUERY_RE.search(prompt)
    if not match:
        raise ValueError(f"Not a UniNER query prompt: {prompt[:200]!r}")
    return match.group("passage"), match.group("label")


def passages_of(prompts: Sequence[str]) -> List[Optional[str]]:
    """The passage of every UniNER query prompt (None for any other prompt)."""
    out: List[Optional[str]] = []
    for prompt in prompts:
        try:
            out.append(parse_query(prompt)[0])
        except ValueError:
            out.append(None)
    return out


def group_by_prefix(prompts: Sequence[str]) -> Dict[str, List[int]]:
    """Prompt indices grouped by everything before their last question turn.

    In the UniNER conversation that is the system text and the passage (and any
    earlier turns); a prompt without a question turn is a group of its own.
    """
    groups: Dict[str, List[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prefix_key(prompt, i), []).append(i)
    return groups


def prefix_key(prompt: str, index: int) -> str:
    """What ``prompt`` (at ``index`` in its call) shares with the other type
    queries of its passage: the text before its last question turn."""
    cut = prompt.rfind(f"{SEP2}{USER}: ")
    return prompt[: cut + len(SEP2)] if cut >= 0 else f"\0{index}"
