"""The registered scorers through ``nlp.evaluate``, with hand-computed numbers."""

import json

import pytest
import spacy
from spacy.training import Example
from spacy.util import registry

import spacy_uniner  # noqa: F401
from spacy_uniner.evaluation.benchmarks import load_uniner_json

LABELS = ["person", "location", "organization"]
TEXT = "Ada Lovelace met Charles Babbage in London ."
GOLD = {"person": ["Ada Lovelace", "Charles Babbage"], "location": ["London"], "organization": []}
REPLIES = {
    "person": '["Ada Lovelace", "Grace Hopper"]',  # one right, one not in the text
    "location": '["London ."]',  # overlaps the gold "London": partial
    "organization": 'The answer is ["Navy"]',  # prose first: empty for UniNER's metric
}


@pytest.fixture
def bench(tmp_path):
    items = [
        {"id": f"t{i}", "conversations": [
            {"from": "human", "value": f"Text: {TEXT}"},
            {"from": "gpt", "value": "I've read this text."},
            {"from": "human", "value": f"What describes {label} in the text?"},
            {"from": "gpt", "value": json.dumps(GOLD[label])}]}
        for i, label in enumerate(LABELS)
    ]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(items))
    return load_uniner_json(path)


def _nlp(store_replies: bool, scorer: str = "spacy_uniner.scorer.v2"):
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "model": {"@uniner_models": "test.ScriptedStudent.v1", "replies": REPLIES},
        "labels": LABELS,
        "store_replies": store_replies,
        "scorer": {"@scorers": scorer},
    })
    return nlp


def _examples(bench, nlp):
    return [Example(bench.predicted_doc(p, nlp.vocab), bench.reference_doc(p, nlp.vocab))
            for p in bench.passages]


def test_v2_scores_strict_partial_and_uniner_from_replies(bench):
    nlp = _nlp(store_replies=True)
    scores = nlp.evaluate(_examples(bench, nlp))
    # predicted spans: Ada Lovelace/person (exact), "London ."/location (overlap)
    assert scores["spans_universal_ner_p"] == pytest.approx(0.5)
    assert scores["spans_universal_ner_r"] == pytest.approx(1 / 3)
    assert scores["spans_universal_ner_f"] == pytest.approx(0.4)
    assert scores["spans_universal_ner_partial_p"] == pytest.approx(0.75)
    assert scores["spans_universal_ner_partial_r"] == pytest.approx(0.5)
    assert scores["spans_universal_ner_partial_f"] == pytest.approx(0.6)
    per_type = scores["spans_universal_ner_partial_per_type"]
    assert per_type["location"]["p"] == 0.5 and per_type["person"]["r"] == 0.5
    # strings: person 1 of 2 predicted / 2 gold; location "london" right; "Navy" unread
    assert scores["spans_universal_ner_uniner_p"] == pytest.approx(2 / 3)
    assert scores["spans_universal_ner_uniner_r"] == pytest.approx(2 / 3)
    assert scores["spans_universal_ner_uniner_from_replies"] == 1.0
    assert "organization" not in scores["spans_universal_ner_uniner_per_type"]


def test_v2_falls_back_to_span_texts_without_replies(bench):
    nlp = _nlp(store_replies=False)
    scores = nlp.evaluate(_examples(bench, nlp))
    # Only mentions found in the text count: ada lovelace, london -> P 1, R 2/3
    assert scores["spans_universal_ner_uniner_p"] == pytest.approx(1.0)
    assert scores["spans_universal_ner_uniner_r"] == pytest.approx(2 / 3)
    assert scores["spans_universal_ner_uniner_from_replies"] == 0.0


def test_v2_no_predictions_and_no_gold(tmp_path):
    item = {"id": "e", "conversations": [
        {"from": "human", "value": "Text: Nothing here ."},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": "[]"}]}
    path = tmp_path / "empty.json"
    path.write_text(json.dumps([item]))
    bench = load_uniner_json(path)
    nlp = _nlp(store_replies=True)
    nlp.get_pipe("universal_ner").model.replies = {"person": "[]"}
    scores = nlp.evaluate(_examples(bench, nlp),
                          component_cfg={"universal_ner": {"labels": ["person"]}})
    for kind in ("", "_partial", "_uniner"):  # nothing to score: None, as spaCy does
        assert scores[f"spans_universal_ner{kind}_f"] is None


def test_v1_still_strict_only(bench):
    nlp = _nlp(store_replies=True, scorer="spacy_uniner.scorer.v1")
    scores = nlp.evaluate(_examples(bench, nlp))
    assert scores["spans_universal_ner_f"] == pytest.approx(0.4)
    assert not any("partial" in k or "uniner_" in k for k in scores)


def test_both_scorer_names_resolve():
    for name in ("spacy_uniner.scorer.v1", "spacy_uniner.scorer.v2"):
        assert callable(registry.scorers.get(name)())
