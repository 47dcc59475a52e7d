import re

import pytest

from spacy_uniner.alignment import find_mentions, make_windows


def words(text):
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def test_every_occurrence_is_found():
    text = "Rome. Rome! Rome? Rome, and Rome"
    assert find_mentions(text, "Rome") == [(0, 4), (6, 10), (12, 16), (18, 22), (28, 32)]


def test_word_boundaries():
    assert find_mentions("a party for art lovers", "art") == [(12, 15)]
    assert find_mentions("C++ and C are languages", "C") == [(0, 1), (8, 9)]
    assert find_mentions("C++ and C are languages", "C++") == [(0, 3)]


def test_whitespace_flexible_and_case_fallback():
    text = "naive Bayes classifier s ,\nGaussian  mixture model"
    assert find_mentions(text, "Gaussian mixture model") == [(27, 50)]
    assert find_mentions("the NEW YORK times", "New York") == [(4, 12)]
    # exact matches win over case-insensitive ones
    assert find_mentions("Apple and apple", "apple") == [(10, 15)]


def test_absent_and_empty_mentions():
    assert find_mentions("Paris is big", "London") == []
    assert find_mentions("Paris", "") == []
    assert find_mentions("Paris", "   ") == []
    assert find_mentions("", "Paris") == []


def test_regex_metacharacters_are_literal():
    assert find_mentions("costs $5 (approx.) now", "$5 (approx.)") == [(6, 18)]


def test_scripts_without_spaces_match_substrings():
    assert find_mentions("東京都に住んでいます", "東京") == [(0, 2)]
    assert find_mentions("مرحبا بكم في القاهرة اليوم", "القاهرة") == [(13, 20)]


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
    assert windows[0].start == 0 and windows[-1].end == len(text)
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


def test_a_rejected_candidate_does_not_hide_a_later_overlapping_one():
    # "aa" inside "aaa" is not a word; the standalone ones are
    assert find_mentions("aaa aa aa", "aa") == [(4, 6), (7, 9)]
    assert find_mentions("xab ab", "ab") == [(4, 6)]
