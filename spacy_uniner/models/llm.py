"""``spacy_uniner.LLMStudent.v1``: any spacy-llm model (e.g. ChatGPT) as the component's student.

Each UniNER query becomes one chat message holding the passage and the
question, with an instruction to answer with a JSON list; the replies then go
through the same parsing, alignment and scoring as a student's. This is how
``eval.benchmark`` scores an LLM such as ChatGPT on the zero-shot suite::

    {"@uniner_models": "spacy_uniner.LLMStudent.v1",
     "llm": {"@llm_models": "spacy_uniner.OpenAICompatible.v1", "name": "gpt-3.5-turbo",
             "endpoint": "https://api.openai.com/v1/chat/completions"}}
"""

from typing import Any, Callable, Iterable, List, Sequence, Tuple

from ..passages import word_offsets
from ..prompts import parse_query
from ..registry import uniner_models
from .base import Generation

CHAT_TEMPLATE = (
    "Text: {passage}\n\nQuestion: What describes {label} in the text?\n"
    "Answer only with a JSON list of the exact mentions from the text, or [] if there are none."
)


class LLMStudent:
    def __init__(self, llm: Callable[[Iterable[Iterable[str]]], Iterable[Iterable[str]]],
                 template: str = CHAT_TEMPLATE) -> None:
        if "{passage}" not in template or "{label}" not in template:
            raise ValueError("template must contain {passage} and {label}")
        self.llm = llm
        self.template = template

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        """Words and punctuation: windows are measured in these for a remote LLM."""
        return word_offsets(text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        messages = []
        for prompt in prompts:
            passage, label = parse_query(prompt)
            messages.append(self.template.format(passage=passage, label=label))
        # spacy-llm models take prompts grouped per document; one group keeps the order.
        replies = [reply for group in self.llm([messages]) for reply in group]
        if len(replies) != len(messages):
            raise RuntimeError(f"The LLM returned {len(replies)} replies for {len(messages)} prompts")
        return [Generation(str(reply).strip()) for reply in replies]


@uniner_models("spacy_uniner.LLMStudent.v1")
def make_llm_student_v1(llm: Any, template: str = CHAT_TEMPLATE) -> LLMStudent:
    """llm: a spacy-llm model block (``@llm_models = ...``).
    template (str): the chat message for one query, with {passage} and {label}.
    """
    return LLMStudent(llm, template)
