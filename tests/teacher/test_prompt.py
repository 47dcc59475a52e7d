import pytest

from spacy_uniner.teacher.prompt import (
    PROMPT_VERSIONS,
    TeacherPrompt,
    passage_from_user_message,
    variant_of_user_message,
)

FIG1_USER = (
    "Given a passage, your task is to extract all entities and identify their entity types. "
    "The output should be in a list of tuples of the following format: "
    '[("entity 1", "type of entity 1"), ... ].\n\nPassage: Ada Lovelace met {Babbage}.'
)


def test_fig1_type_prompt_is_exact():
    prompt = TeacherPrompt.for_variant("type")
    messages = prompt.messages("Ada Lovelace met {Babbage}.")
    assert messages[0] == {
        "role": "system",
        "content": "You are a helpful information extraction system.",
    }
    assert messages[1] == {"role": "user", "content": FIG1_USER}
    assert prompt.temperature == 0.0
    assert prompt.version == PROMPT_VERSIONS["type"]


def test_definition_variant():
    prompt = TeacherPrompt.for_variant("definition")
    user = prompt.messages("x")[1]["content"]
    assert "extract all entities and concepts, and define their type using a short sentence" in user
    assert variant_of_user_message(user) == "definition"
    assert passage_from_user_message(user) == "x"
    assert prompt.fingerprint != TeacherPrompt.for_variant("type").fingerprint


def test_fingerprint_follows_wording_not_identity():
    base = TeacherPrompt.for_variant("type")
    assert base.fingerprint == TeacherPrompt.for_variant("type").fingerprint
    custom = TeacherPrompt.for_variant("type", user_template="List entities.\nPassage: {passage}")
    assert custom.fingerprint != base.fingerprint
    assert custom.version.endswith("+custom")
    assert TeacherPrompt.for_variant("type", max_tokens=64).fingerprint != base.fingerprint


def test_bad_template_and_variant_are_refused():
    with pytest.raises(ValueError, match="passage"):
        TeacherPrompt.for_variant("type", user_template="no field")
    with pytest.raises(ValueError, match="variant"):
        TeacherPrompt.for_variant("summary")
