"""An LLM (any spacy-llm model) as the component's student, e.g. to score ChatGPT."""

import json

import spacy

from spacy_uniner.models.llm import LLMStudent


class FakeChat:
    """A spacy-llm-style model: prompts grouped per document in, replies out."""

    def __init__(self):
        self.messages = []

    def __call__(self, groups):
        out = []
        for group in groups:
            replies = []
            for message in group:
                self.messages.append(message)
                replies.append('["Ada Lovelace"]' if "describes person" in message else "[]")
            out.append(replies)
        return out


def test_llm_student_answers_through_the_component():
    chat = FakeChat()
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("universal_ner", config={
        "labels": ["person", "location"],
        "model": {"@uniner_models": "test.ScriptedStudent.v1", "replies": {}}})
    pipe.model = LLMStudent(chat)
    doc = nlp("Ada Lovelace met Babbage. Ada Lovelace wrote notes.")
    assert [(s.text, s.label_) for s in doc.spans["universal_ner"]] == [("Ada Lovelace", "person")] * 2
    assert len(chat.messages) == 2
    assert chat.messages[0].startswith("Text: Ada Lovelace met Babbage.")
    assert "What describes person in the text?" in chat.messages[0]


def test_llm_student_from_config_talks_to_an_openai_compatible_server(teacher_server):
    server = teacher_server()
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "labels": ["person", "city"],
        "store_replies": True,
        "model": {
            "@uniner_models": "spacy_uniner.LLMStudent.v1",
            "llm": {"@llm_models": "spacy_uniner.OpenAICompatible.v1", "name": "replay",
                    "endpoint": f"{server.base_url}/chat/completions"},
        },
    })
    docs = list(nlp.pipe(["A passage the replay teacher has never seen.", "Another one."]))
    assert server.stats()["requests"] == 4  # one chat request per (passage, type)
    replies = [r for d in docs for r in d.user_data["universal_ner"]["replies"]]
    assert len(replies) == 4 and all(json.loads(r["reply"]) == [] for r in replies)
    assert nlp.get_pipe("universal_ner").stats["parse_failures"] == 0
