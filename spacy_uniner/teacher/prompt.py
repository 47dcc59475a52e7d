"""The teacher prompt of the UniversalNER paper (Fig. 1), type and definition variants.

The prompt is a pair of chat messages at temperature 0. Every row the teacher
produces records :attr:`TeacherPrompt.version`, and the disk cache is keyed by
:attr:`TeacherPrompt.fingerprint` (a hash of everything that reaches the model),
so editing the wording re-asks the teacher while a rerun with the same prompt
makes no call.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Dict, List, Optional

SYSTEM = "You are a helpful information extraction system."

TYPE_INSTRUCTION = (
    "Given a passage, your task is to extract all entities and identify their entity types. "
    "The output should be in a list of tuples of the following format: "
    '[("entity 1", "type of entity 1"), ... ].'
)
DEFINITION_INSTRUCTION = (
    "Given a passage, your task is to extract all entities and concepts, and define their "
    "type using a short sentence. The output should be in a list of tuples of the following "
    'format: [("entity 1", "definition of entity 1"), ... ].'
)
PASSAGE_FIELD = "{passage}"
USER_TEMPLATES: Dict[str, str] = {
    "type": TYPE_INSTRUCTION + "\n\nPassage: " + PASSAGE_FIELD,
    "definition": DEFINITION_INSTRUCTION + "\n\nPassage: " + PASSAGE_FIELD,
}
# Bump when the built-in wording changes; a custom template gets its own name.
PROMPT_VERSIONS: Dict[str, str] = {
    "type": "uniner.teacher.type.v1",
    "definition": "uniner.teacher.definition.v1",
}
VARIANTS = tuple(USER_TEMPLATES)


@dataclass(frozen=True)
class TeacherPrompt:
    """One teacher prompt: system message, user template with ``{passage}``, sampling."""

    variant: str = "type"
    system: str = SYSTEM
    user_template: str = USER_TEMPLATES["type"]
    temperature: float = 0.0
    max_tokens: Optional[int] = None
    version: str = PROMPT_VERSIONS["type"]

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown prompt variant {self.variant!r}; choose one of {VARIANTS}.")
        if self.user_template.count(PASSAGE_FIELD) != 1:
            raise ValueError(
                f"The teacher's user template must contain {PASSAGE_FIELD} exactly once; "
                f"got: {self.user_template[:80]!r}"
            )

    @classmethod
    def for_variant(cls, variant: str = "type", **overrides) -> "TeacherPrompt":
        if variant not in VARIANTS:
            raise ValueError(f"Unknown prompt variant {variant!r}; choose one of {VARIANTS}.")
        fields = dict(
            variant=variant, user_template=USER_TEMPLATES[variant], version=PROMPT_VERSIONS[variant]
        )
        fields.update(overrides)
        if "user_template" in overrides and "version" not in overrides:
            fields["version"] = f"{PROMPT_VERSIONS[variant]}+custom"
        return cls(**fields)

    def messages(self, passage: str) -> List[Dict[str, str]]:
        # str.replace, not str.format: passages contain braces (code, JSON).
        user = self.user_template.replace(PASSAGE_FIELD, passage)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    @property
    def fingerprint(self) -> str:
        """Hash of everything that reaches the model besides the passage and model name."""
        payload = json.dumps(
            {
                "system": self.system,
                "user_template": self.user_template,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def passage_from_user_message(content: str) -> Optional[str]:
    """The passage inside a rendered user message (used by the replay server)."""
    marker = "Passage: "
    index = content.find(marker)
    return None if index < 0 else content[index + len(marker) :]


def variant_of_user_message(content: str) -> str:
    return "definition" if "define their type" in content else "type"
