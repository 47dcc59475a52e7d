import pytest

from spacy_uniner import prompts

PINNED = (
    "A virtual assistant answers questions from a user based on the provided text. "
    "USER: Text: {passage} ASSISTANT: I've read this text.</s>"
    "USER: What describes {type} in the text? ASSISTANT:"
)


def test_inference_prompt_is_token_exact_with_uniner():
    passage = "Ada Lovelace met Charles Babbage in London."
    assert prompts.render_query(passage, "person") == PINNED.format(passage=passage, type="person")


def test_training_conversation_continues_with_answers_and_separators():
    turns = [prompts.Turn(prompts.question("person"), '["a", "b"]'),
             prompts.Turn(prompts.question("location"), "[]")]
    text = prompts.render_conversation("P", turns)
    assert text == (
        "A virtual assistant answers questions from a user based on the provided text. "
        "USER: Text: P ASSISTANT: I've read this text.</s>"
        'USER: What describes person in the text? ASSISTANT: ["a", "b"]</s>'
        "USER: What describes location in the text? ASSISTANT: []</s>"
    )


def test_training_segments_mark_only_answers_for_loss():
    turns = [prompts.Turn(prompts.question("person"), '["a"]'),
             prompts.Turn(prompts.question("date"), "[]")]
    segments = prompts.training_segments("P", turns)
    assert "".join(text for text, _ in segments) == prompts.render_conversation("P", turns)
    assert [text for text, loss in segments if loss] == [' ["a"]</s>', " []</s>"]


def test_dataset_specific_variant_adds_dataset_line_only_when_given():
    with_name = prompts.render_query("P", "gene", dataset="BC5CDR")
    assert "USER: Dataset: BC5CDR\nText: P ASSISTANT:" in with_name
    assert "Dataset:" not in prompts.render_query("P", "gene")


def test_definition_and_all_in_one_variants():
    definition = "a person, group or company that makes software"
    assert prompts.render_query("P", definition).endswith(
        f"USER: What describes {definition} in the text? ASSISTANT:"
    )
    question = prompts.all_in_one_question(["person", "location"])
    assert question.startswith("What describes person, location in the text?")
    assert "[entity, type]" in question


def test_parsing_a_query_inverts_rendering():
    for dataset in (None, "BC5CDR"):
        prompt = prompts.render_query("A text? With ASSISTANT: inside.", '"odd" type', dataset)
        assert prompts.parse_query(prompt) == ("A text? With ASSISTANT: inside.", '"odd" type')
    assert prompts.question_label("What describes person in the text?") == "person"
    assert prompts.question_label("Who is it?") is None
    with pytest.raises(ValueError, match="Not a UniNER query"):
        prompts.parse_query("hello")
