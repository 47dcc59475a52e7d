from spacy_uniner.alignment import find_mentions, mention_can_start


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


def test_a_rejected_candidate_does_not_hide_a_later_overlapping_one():
    # "aa" inside "aaa" is not a word; the standalone ones are
    assert find_mentions("aaa aa aa", "aa") == [(4, 6), (7, 9)]
    assert find_mentions("xab ab", "ab") == [(4, 6)]


def test_a_mention_being_written_must_start_a_word():
    text = "Ada Lovelace met Charles  Babbage."
    assert mention_can_start(text, "") and mention_can_start(text, "  ")
    assert mention_can_start(text, "Love") and mention_can_start(text, "lovel")
    assert not mention_can_start(text, "ovel")  # inside "Lovelace"
    assert mention_can_start(text, "charles bab")  # whitespace runs and case aside
    assert mention_can_start(text, "Ada ")  # a space follows "Ada"
    assert not mention_can_start(text, "Babbage ")  # "." follows "Babbage"
    assert not mention_can_start(text, "Quxford")
