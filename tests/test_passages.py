"""Cutting text into passages: the component's windows and the teacher's passages are one."""

import pytest

from spacy_uniner.component import UniversalNER
from spacy_uniner.passages import (
    Chunker,
    make_windows,
    sentence_starts,
    tokenizer_offsets,
    word_offsets,
)
from spacy_uniner.prompts import parse_query
from spacy_uniner.teacher.corpus import (
    CorpusReport,
    load_student_tokenizer,
    read_documents,
    sample_passages,
)
from spacy_uniner.testing import ScriptedStudent

words = word_offsets


def test_short_text_is_one_window():
    text = "One sentence."
    assert [(w.start, w.end) for w in make_windows(text, words(text), 256, 32)] == [(0, 13)]


def test_blank_text_has_no_window():
    assert make_windows("  \n ", [], 256, 32) == []


def check_windows(text, max_tokens, overlap):
    offsets = words(text)
    windows = make_windows(text, offsets, max_tokens, overlap)
    covered = set()
    for w in windows:
        inside = [o for o in offsets if w.start <= o[0] and o[1] <= w.end]
        assert len(inside) <= max_tokens
        covered.update(inside)
    assert covered == set(offsets), "every token is in some window"
    # a window is the text from its first to its last token, without surrounding space
    assert windows[0].start == len(text) - len(text.lstrip())
    assert windows[-1].end == len(text.rstrip())
    assert all(text[w.start : w.end] == text[w.start : w.end].strip() for w in windows)
    for a, b in zip(windows, windows[1:]):
        assert a.start < b.start <= a.end, "windows advance and touch or overlap"
    return windows


def test_windows_prefer_sentence_boundaries_and_overlap():
    sentence = "Ada Lovelace wrote notes on the engine of Charles Babbage in London . "
    text = sentence * 30
    windows = check_windows(text, 40, 16)
    assert len(windows) > 5
    for w in windows[1:]:
        assert text[w.start :].lstrip().startswith("Ada"), "windows start at a sentence"
    assert any(a.end > b.start for a, b in zip(windows, windows[1:])), "windows overlap"


def test_windows_without_sentences_fall_back_to_whitespace():
    text = " ".join(f"word{i}" for i in range(1000))
    windows = check_windows(text, 64, 8)
    for w in windows:
        assert not text[w.start : w.end].strip().startswith("ord"), "never cut inside a word"


def test_enormous_document_windows():
    text = ("Grace Hopper worked on COBOL at Remington Rand. " * 7000)[:300_000]
    assert len(text) == 300_000
    windows = check_windows(text, 256, 32)
    assert len(windows) > 200


@pytest.mark.parametrize("max_tokens,overlap", [(0, 0), (10, 8), (10, -1)])
def test_bad_window_settings(max_tokens, overlap):
    with pytest.raises(ValueError, match="max_passage_tokens|window_overlap"):
        make_windows("a b c", words("a b c"), max_tokens, overlap)


def test_sentences_skip_abbreviations_and_initials():
    text = 'Dr. Smith met J. Doe. He said "hi!" Then left.\nA new line'
    starts = sentence_starts(text)
    assert [text[s:].split()[0] for s in starts] == ["He", "Then", "A"]


def test_windows_say_why_they_end():
    text = "Ada wrote notes. " * 20 + " ".join(f"w{i}" for i in range(200))
    cuts = [w.cut for w in make_windows(text, words(text), 40, 0)]
    assert cuts[0] == "sentence" and "space" in cuts and cuts[-1] == "end"


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return load_student_tokenizer(str(smollm2_tokenizer_dir))


class TokenizedStudent(ScriptedStudent):
    """A scripted student that measures text with a real tokenizer."""

    def __init__(self, tokenizer):
        super().__init__({})
        self.tokenizer = tokenizer

    def token_offsets(self, text):
        return tokenizer_offsets(self.tokenizer, text)


DOCUMENT = (
    "  "
    + "".join(f"Dr. Ada Lovelace wrote note {i} on the Analytical Engine in London. "
              for i in range(12))
    + "\n\nA list without full stops follows "
    + " ".join(f"item{i}" for i in range(150))
    + "\nJ. Doe replied from Paris! Grace Hopper built compilers at Remington Rand.  \n"
)


@pytest.mark.parametrize("max_tokens,overlap", [(64, 0), (48, 16)])
def test_teacher_passages_are_the_components_windows(tokenizer, tmp_path, max_tokens, overlap):
    import spacy

    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    report = CorpusReport()
    documents = list(read_documents([path], report))
    assert len(documents) == 1
    chunker = Chunker(tokenizer, max_tokens, overlap)  # what ray_jobs.annotate builds
    teacher = [p.text for p in sample_passages(documents, chunker, None, 0, report)]

    nlp = spacy.blank("en")
    student = TokenizedStudent(tokenizer)
    ner = UniversalNER(nlp.vocab, student, labels=["person"], max_passage_tokens=max_tokens,
                       window_overlap=overlap)
    ner(nlp(DOCUMENT))
    component = [parse_query(prompt)[0] for prompt in student.prompts]

    assert len(teacher) > 5
    assert teacher == component
