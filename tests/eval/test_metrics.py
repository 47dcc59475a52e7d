"""Partial match and UniNER's string metric, on hand-checked examples.

The expected values of the string metric were worked out by hand from the
rules of universal-ner/universal-ner ``src/eval/evaluate.py`` (and checked
against a local, uncommitted transcription of that script).
"""

import pytest

from spacy_uniner.evaluation.metrics import (
    PRF,
    error_kinds,
    normalize_answer,
    partial_match_counts,
    partial_match_prf,
    reference_prf,
    reference_response,
    string_match_counts,
    uniner_parse,
    uniner_string_counts,
)

# --- error kinds ---------------------------------------------------------------------


def test_error_kinds_by_hand():
    gold = [(0, 2, "person"), (3, 5, "location"), (6, 9, "organization"), (10, 12, "person"),
            (20, 22, "date")]
    pred = [
        (0, 2, "person"),  # exact
        (3, 5, "organization"),  # same offsets as the location: wrong type
        (6, 8, "organization"),  # inside the organization: boundary
        (10, 13, "location"),  # overlaps only a person: boundary and type
        (14, 16, "person"),  # meets nothing: spurious
        (14, 16, "person"),  # a duplicate counts once
    ]
    kinds = error_kinds(pred, gold)
    assert kinds["predicted"] == {"exact": 1, "wrong_type": 1, "boundary": 1,
                                  "boundary_and_type": 1, "none": 1}
    # the date is missed; the location is found only under another type
    assert kinds["gold"] == {"exact": 1, "wrong_type": 1, "boundary": 1,
                             "boundary_and_type": 1, "none": 1}


def test_error_kinds_prefers_the_most_telling_kind():
    # one prediction meets a gold span of its type (boundary) and one of another type
    # with its own offsets (wrong type): same offsets come first
    kinds = error_kinds([(0, 4, "a")], [(0, 4, "b"), (0, 2, "a")])
    assert kinds["predicted"]["wrong_type"] == 1
    assert kinds["gold"] == {"exact": 0, "wrong_type": 1, "boundary": 1,
                             "boundary_and_type": 0, "none": 0}
    assert error_kinds([], []) == {side: dict.fromkeys(
        ("exact", "wrong_type", "boundary", "boundary_and_type", "none"), 0)
        for side in ("predicted", "gold")}


# --- partial match -------------------------------------------------------------------


def test_partial_no_gold_no_predictions_is_all_zero():
    prf = partial_match_prf([], [])
    assert (prf.tp, prf.n_pred, prf.n_gold) == (0, 0, 0)
    assert (prf.p, prf.r, prf.f) == (0.0, 0.0, 0.0)


def test_partial_no_predictions_gives_zero_recall():
    prf = partial_match_prf([], [(0, 2, "person")])
    assert (prf.p, prf.r, prf.f, prf.n_gold) == (0.0, 0.0, 0.0, 1)


def test_partial_no_gold_gives_zero_precision():
    prf = partial_match_prf([(0, 2, "person")], [])
    assert (prf.p, prf.n_pred, prf.n_gold) == (0.0, 1, 0)


def test_partial_duplicate_spans_count_once():
    prf = partial_match_prf([(0, 2, "person"), (0, 2, "person")], [(0, 2, "person")] * 2)
    assert (prf.tp, prf.n_pred, prf.n_gold, prf.f) == (1, 1, 1, 1.0)


def test_partial_overlap_of_same_type_is_half_a_true_positive():
    prf = partial_match_prf([(1, 2, "person")], [(0, 3, "person")])
    assert prf.tp == 0.5
    assert prf.p == prf.r == prf.f == 0.5


def test_partial_overlap_of_different_types_counts_nothing():
    prf = partial_match_prf([(0, 3, "organization")], [(0, 3, "person")])
    assert prf.tp == 0
    counts = partial_match_counts([(0, 3, "organization")], [(0, 3, "person")])
    assert counts["organization"].n_pred == 1 and counts["organization"].n_gold == 0
    assert counts["person"].n_gold == 1 and counts["person"].n_pred == 0


def test_partial_touching_spans_do_not_overlap():
    assert partial_match_prf([(2, 4, "x")], [(0, 2, "x")]).tp == 0


def test_partial_exact_match_is_taken_before_an_overlap():
    # (0,2) matches exactly; (1,3) overlaps the same gold span, which is used up.
    prf = partial_match_prf([(0, 2, "x"), (1, 3, "x")], [(0, 2, "x")])
    assert (prf.tp, prf.n_pred, prf.n_gold) == (1, 2, 1)
    assert prf.p == 0.5 and prf.r == 1.0


def test_partial_matching_is_one_to_one_and_maximal():
    # (0,3) comes first and overlaps both gold spans: a greedy pass would pair it
    # with (0,2) and strand (1,2); the maximum matching pairs both predictions.
    pred = [(1, 2, "x"), (0, 3, "x")]
    gold = [(0, 2, "x"), (2, 4, "x")]
    counts = partial_match_counts(pred, gold)["x"]
    assert (counts.exact, counts.partial) == (0, 2)
    assert partial_match_prf(pred, gold).f == 0.5


def test_partial_one_long_prediction_matches_only_one_gold_span():
    prf = partial_match_prf([(0, 3, "x")], [(0, 1, "x"), (2, 3, "x")])
    assert (prf.tp, prf.p, prf.r) == (0.5, 0.5, 0.25)


def test_partial_rejects_empty_spans():
    with pytest.raises(ValueError, match="Empty or reversed"):
        partial_match_prf([(3, 3, "x")], [])


def test_prf_addition_is_micro():
    total = PRF(1, 2, 2)
    total += PRF(0, 0, 2)
    assert (total.p, total.r) == (0.5, 0.25)


# --- UniNER string metric ------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The  Beatles!", "beatles"),
        ("U.S.-based", "usbased"),
        ("an apple", "apple"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("a", ""),  # an article alone normalises to the empty string
        ("Café  Müller", "café müller"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [
        ('["The Beatles", "beatles", "Beatles!"]', ["beatles"]),  # de-duplicated after normalising
        ('["a", "B"]', ["", "b"]),
        ('["x"] and more ["y"]', ["x"]),  # only the first list
        ("[]", []),
        ("", []),
        # The reference's quirks, kept on purpose:
        ('Sure: ["x"]', []),  # the list must open the answer
        (' ["x"]', []),  # ... even a leading space (replies are stripped first)
        ('["x]y", "z"]', []),  # the list ends at the first "]"
        ('["x", 1]', []),  # a non-string item empties the answer
        ('["x", null]', []),
        ('[["x", "person"]]', []),  # nested lists are cut at the first "]"
        ('["a",\n"b"]', []),  # no newline inside the list
        ('["x", "y"', []),  # truncated
    ],
)
def test_uniner_parse_matches_reference_rules(answer, expected):
    assert uniner_parse(answer) == expected


def test_reference_response_keeps_text_after_last_assistant_marker():
    assert reference_response('blah ASSISTANT: x ASSISTANT:  ["a"] ') == '["a"]'


def test_string_metric_hand_checked_micro_example():
    replies = [
        '["Paris", "the Louvre", "paris"]',  # -> paris, louvre: 2 correct of 2
        "There are none.",  # not a list -> nothing predicted
        '["Einstein", "Bohr"]',  # 2 predicted, no gold
    ]
    golds = ['["Paris", "Louvre", "Seine"]', '["Marie Curie"]', "[]"]
    counts = uniner_string_counts(replies, golds)
    assert (counts.tp, counts.n_pred, counts.n_gold) == (2, 4, 4)
    assert counts.f == 0.5
    ref = reference_prf(counts)
    assert ref["precision"] == pytest.approx(0.4999999999875, abs=1e-15)
    assert ref["recall"] == pytest.approx(0.4999999999875, abs=1e-15)
    assert ref["f1"] == pytest.approx(0.4999999999375, abs=1e-15)


def test_string_metric_no_gold_and_no_predictions():
    counts = uniner_string_counts(["[]", "no idea"], ["[]", "[]"])
    assert (counts.tp, counts.n_pred, counts.n_gold, counts.f) == (0, 0, 0, 0.0)
    assert reference_prf(counts) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_string_metric_duplicate_predictions_count_once_per_query():
    counts = uniner_string_counts(['["IBM", "IBM", "ibm."]', '["IBM"]'], ['["IBM"]', '["IBM"]'])
    assert (counts.tp, counts.n_pred, counts.n_gold) == (2, 2, 2)


def test_string_metric_needs_aligned_inputs():
    with pytest.raises(ValueError):
        uniner_string_counts(["[]"], [])


def test_string_match_counts_on_parsed_items():
    assert string_match_counts(["a", "b"], ["b", "c", "d"]).as_dict()["tp"] == 1
