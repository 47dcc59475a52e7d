"""Grounded decoding: a mention the student writes is a substring of its passage."""

import pytest

from spacy_uniner import prompts
from spacy_uniner.models.grounding import (
    GroundedChooser,
    closing_token_ids,
    end_token_ids,
    list_state,
    token_texts,
)
from spacy_uniner.models.hf import HFStudent, make_hf_student_v1, make_hf_student_v2
from spacy_uniner.parsing import open_string, parse_student_reply
from spacy_uniner.prompts import passages_of

PASSAGE = "Ada Lovelace met Charles Babbage in London."
FREE = ' ["Quxford", "Ada Lovelace"]'  # "Quxford" is not in the passage
GROUNDED = ' ["Ada Lovelace"]'


def test_open_string():
    assert open_string("") is None
    assert open_string(' ["Ada') == "Ada"
    assert open_string(' ["Ada", "') == ""
    assert open_string(' ["Ada", "Bob"]') is None
    assert open_string(' ["say \\"hi') == 'say "hi'
    assert open_string(' ["a\\u00e9b') == "a\u00e9b"
    assert open_string(' ["a\\u00') == "a"  # an escape cut off at the end is left out
    assert open_string(' ["a\\') == "a"


def test_closing_tokens_and_passages(tiny_model_dir):
    student = HFStudent(str(tiny_model_dir))
    tok = student.tokenizer
    texts = {tok.decode([i]) for i in closing_token_ids(tok)}
    decoded = token_texts(tok)
    assert closing_token_ids(tok, decoded) == closing_token_ids(tok)
    assert end_token_ids(tok, decoded) == end_token_ids(tok) == [
        i for i in range(len(tok)) if tok.decode([i]).strip() == "]"
    ]
    assert {'"', '",', '"]'} <= texts
    assert all(t.startswith('"') and "a" not in t for t in texts)
    ps = [prompts.render_query(PASSAGE, "person"), "free text",
          prompts.render_query("B.", "x", dataset="CoNLL-2003")]
    assert passages_of(ps) == [PASSAGE, None, "B."]


def test_the_chooser_keeps_open_strings_in_the_passage(tiny_model_dir):
    import torch

    tok = HFStudent(str(tiny_model_dir)).tokenizer
    chooser = GroundedChooser(tok, [PASSAGE, None], closing_token_ids(tok), top_k=3)
    reply = tok(' ["Ada', add_special_tokens=False)["input_ids"]
    good = tok(" Lovelace", add_special_tokens=False)["input_ids"][0]
    bad = tok(" Quxford", add_special_tokens=False)["input_ids"][0]
    assert chooser.allowed(chooser.passages[0], reply, good)
    assert not chooser.allowed(chooser.passages[0], reply, bad)
    logprobs = torch.full((len(tok),), -30.0)
    logprobs[bad], logprobs[good] = -0.1, -3.0
    assert chooser(0, reply, logprobs) == good  # the most likely allowed token
    assert chooser(1, reply, logprobs) == bad  # a prompt without a passage: free
    # nothing allowed in the top 3: the most likely closing token ends the string
    logprobs[good] = -30.0
    for word, lp in ((" Zebra", -1.0), (" Xeno", -2.0)):
        logprobs[tok(word, add_special_tokens=False)["input_ids"][0]] = lp
    quote = tok('"', add_special_tokens=False)["input_ids"][0]
    logprobs[quote] = -20.0
    assert chooser(0, reply, logprobs) == quote and chooser.forced == 1
    # case and whitespace runs are compared as alignment compares them
    upper = tok(' ["ADA  LOVE', add_special_tokens=False)["input_ids"]
    assert chooser.allowed(chooser.passages[0], upper[:-1], upper[-1])


def test_list_state():
    opened, in_string, after_string, after_comma, closed = 1, 2, 4, 5, 6
    assert list_state("Sure, here:") == (0, 0, "")  # prose before a list is not judged
    assert list_state(' ["Ada') == (in_string, 0, "")
    assert list_state(' ["Ada", "Bo\\"b"') == (after_string, 2, 'Bo\\"b')
    assert list_state(' ["Ada",') == (after_comma, 1, "Ada")
    assert list_state(" [ ") == (opened, 0, "")
    assert list_state(' ["Ada"]') == (closed, 1, "Ada")
    assert list_state(' ["Ada" "Bob"]')[0] is None  # two strings without a comma
    assert list_state(' ["Ada",]')[0] is None
    assert list_state(" [Ada]")[0] is None


def test_mentions_start_and_end_on_word_boundaries(tiny_model_dir):
    import torch

    tok = HFStudent(str(tiny_model_dir)).tokenizer
    chooser = GroundedChooser(tok, [PASSAGE], closing_token_ids(tok), top_k=3,
                              end_ids=end_token_ids(tok))
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731

    def ok(reply, token):
        return chooser.allowed(PASSAGE, ids(reply), ids(token)[0])

    assert ok(' ["Love', "l")  # "Lovel..." may go on
    assert not ok(' ["Love', '"')  # but not close inside "Lovelace"
    assert not ok(' ["Love', '",')
    assert ok(' ["Lovelace', '"')
    assert ok(' ["Lovelace', '",')
    assert not ok(' ["', "ovel")  # nor start inside a word
    assert not ok(' ["Ada"', ' "')  # a second string needs a comma first
    assert ok(' ["Ada"', ",") and ok(' ["Ada"', "]")
    # a list that cannot go on ends with its most likely "]"
    chooser.top_k = 1
    logprobs = torch.full((len(tok),), -30.0)
    logprobs[ids(' "')[0]] = -0.1
    end = ids("]")[0]
    logprobs[end] = -5.0
    assert chooser(0, ids(' ["Ada"'), logprobs) == end and chooser.forced == 1


def _script(tok, inner):
    """A chooser that first pushes the reply toward FREE (+50) and else toward
    GROUNDED (+40), then lets ``inner`` choose: the tiny random model, scripted
    to hallucinate."""
    targets = [(tok(FREE, add_special_tokens=False)["input_ids"], 50.0),
               (tok(GROUNDED, add_special_tokens=False)["input_ids"], 40.0)]

    def choose(prompt, reply, logprobs):
        biased = logprobs.clone()
        for target, bonus in targets:
            if len(reply) < len(target) and list(reply) == target[: len(reply)]:
                biased[target[len(reply)]] += bonus
        return inner(prompt, reply, biased.log_softmax(-1))

    return choose


@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_a_scripted_hallucination_cannot_come_out(tiny_model_dir, monkeypatch, prefix_sharing):
    ps = [prompts.render_query(PASSAGE, label) for label in ("person", "place")]
    grounded_chooser = HFStudent._chooser

    monkeypatch.setattr(
        HFStudent, "_chooser",
        lambda self, prompts: _script(
            self.tokenizer,
            grounded_chooser(self, prompts) if self.grounded
            else (lambda p, r, lp: int(lp.argmax())),
        ),
    )
    settings = dict(max_new_tokens=24, threads=1, prefix_sharing=prefix_sharing)
    free = HFStudent(str(tiny_model_dir), **settings).generate(ps)
    assert [g.text for g in free] == [FREE.strip()] * 2  # the script makes it up
    grounded = HFStudent(str(tiny_model_dir), grounded=True, **settings).generate(ps)
    assert [g.text for g in grounded] == [GROUNDED.strip()] * 2
    for g in grounded:
        assert parse_student_reply(g.text).items == ["Ada Lovelace"]
        assert len(g.token_logprobs) == len(g.token_offsets) > 0


def test_grounded_answers_agree_across_decoders(tiny_model_dir):
    texts = ["Ada Lovelace met Charles Babbage in London in 1833.", "Short."]
    ps = [prompts.render_query(t, label) for t in texts for label in ("person", "date", "x")]
    settings = dict(max_new_tokens=10, batch_size=4, threads=1, grounded=True)
    shared = HFStudent(str(tiny_model_dir), **settings).generate(ps)
    plain = HFStudent(str(tiny_model_dir), prefix_sharing=False, **settings).generate(ps)
    assert [g.text for g in shared] == [g.text for g in plain]
    for a, b in zip(shared, plain):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)


def test_v2_grounds_by_default_and_v1_does_not(tiny_model_dir):
    name = str(tiny_model_dir)
    assert make_hf_student_v2(name=name).grounded is True
    assert make_hf_student_v2(name=name, grounded=False).grounded is False
    assert make_hf_student_v1(name=name).grounded is False
    assert "grounded=True" in repr(make_hf_student_v2(name=name))
