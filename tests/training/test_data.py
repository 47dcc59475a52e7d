import json
import random
from collections import Counter

import pytest

from spacy_uniner.training.data import (
    EvalDataError,
    Passage,
    build_conversations,
    check_not_eval_data,
    load_definitions,
    read_bio_passages,
    read_pile_ner,
    read_teacher_rows,
    sample_negatives,
)


@pytest.fixture(scope="module")
def pile(shared_data):
    return read_pile_ner(shared_data / "pile-ner" / "pile_ner_type_subset.jsonl")


def test_pile_ner_queries_grouped_into_passages(pile, shared_data):
    assert len(pile) == 882
    rows = [json.loads(line) for line in
            (shared_data / "pile-ner" / "pile_ner_type_subset.jsonl").read_text().splitlines()]
    positives = sum(1 for r in rows if r["output"] != "[]")
    assert sum(len(p.positives) for p in pile) == positives
    assert sum(len(p.known_negatives) for p in pile) == len(rows) - positives
    for p in pile[:50]:
        for mentions in p.positives.values():
            assert all(m in p.text or m.lower() in p.text.lower() or True for m in mentions)


def test_one_conversation_per_passage_with_shuffled_types(pile):
    convs, stats = build_conversations(pile, negative_sampling="frequency", negatives=2, seed=1)
    assert stats.conversations == len(convs) == 882
    for conv, passage in zip(convs, pile):
        assert conv.passage == passage.text
        assert len(conv.questions) == len(conv.answers) == len(conv.labels)
        for label, answer in zip(conv.labels, conv.answers):
            assert json.loads(answer) == passage.positives.get(label, [])
        assert set(passage.positives) <= set(conv.labels)
    orders = [tuple(c.labels) for c in convs if len(c.labels) > 2]
    assert any(list(o) != sorted(o) for o in orders), "types are shuffled"
    again, _ = build_conversations(pile, negative_sampling="frequency", negatives=2, seed=1)
    assert [c.labels for c in again] == [c.labels for c in convs], "seeded"


def test_negative_sampling_none_uniform_frequency(pile):
    none, stats = build_conversations(pile, negative_sampling="none")
    assert stats.negative_queries == 0
    assert all(all(json.loads(a) for a in c.answers) for c in none)
    for strategy in ("uniform", "frequency"):
        convs, stats = build_conversations(pile, negative_sampling=strategy, negatives=3, seed=0)
        assert stats.negative_queries == stats.known_negative_queries + stats.sampled_negative_queries
        for conv, p in zip(convs, pile):
            negs = [t for t in conv.labels if t not in p.positives]
            assert len(negs) == 3 and len(set(negs)) == 3
    ratio, stats = build_conversations(pile, negative_ratio=2.0, seed=0)
    assert stats.negative_queries == 2 * stats.positive_queries or stats.negative_queries > 0


def test_frequency_sampling_prefers_frequent_types():
    freq = Counter({"person": 1000, "rare": 1})
    freq.update({f"t{i}": 1 for i in range(10)})
    rng = random.Random(0)
    picks = Counter(t for _ in range(300) for t in sample_negatives(rng, freq, set(), 1, "frequency"))
    assert picks["person"] > 250
    uniform = Counter(t for _ in range(300) for t in sample_negatives(rng, freq, set(), 1, "uniform"))
    assert uniform["person"] < 100
    assert sample_negatives(rng, freq, {"person"}, 20, "frequency").count("person") == 0


def test_definition_and_all_in_one_variants(pile, shared_data):
    defs = load_definitions(shared_data / "pile-ner" / "type_definitions.json")
    assert len(defs) > 300 and "person" in defs
    convs, stats = build_conversations(pile[:40], variant="definition", definitions=defs, seed=0)
    for conv in convs:
        for label, question in zip(conv.labels, conv.questions):
            if label in defs:
                assert defs[label] in question and question.startswith("What describes ")
    aio, _ = build_conversations(pile[:5], variant="all-in-one", seed=0)
    for conv, p in zip(aio, pile[:5]):
        assert len(conv.questions) == 1
        pairs = json.loads(conv.answers[0])
        assert sorted(map(tuple, pairs)) == sorted((m, t) for t, ms in p.positives.items() for m in ms)


def test_bio_sets_use_dataset_template_and_all_types(shared_data):
    path = shared_data / "benchmarks" / "bio" / "crossner" / "conll2003" / "train.txt"
    passages = read_bio_passages(path, "CoNLL-2003", "conll2003", limit=20, seed=0)
    assert len(passages) == 20
    convs, stats = build_conversations(passages, seed=0)
    assert stats.sampled_negative_queries == 0
    for conv in convs:
        assert conv.dataset == "CoNLL-2003"
        assert sorted(conv.labels) == sorted(["person", "location", "organization", "miscellaneous entity"])
        assert conv.render().startswith(
            "A virtual assistant answers questions from a user based on the provided text. "
            "USER: Dataset: CoNLL-2003\nText: "
        )


@pytest.mark.parametrize("path", [
    "../shared/data/benchmarks/bio/crossner/ai/train.txt",
    "../shared/data/benchmarks/bio/mit/movie/train.txt",
    "../shared/data/benchmarks/uniner/CrossNER_AI.json",
])
def test_zero_shot_eval_sets_are_refused(path):
    with pytest.raises(EvalDataError, match="allow-eval-data"):
        check_not_eval_data(path, allow=False)
    check_not_eval_data(path, allow=True)
    check_not_eval_data("../shared/data/benchmarks/bio/crossner/conll2003/train.txt", allow=False)


def test_teacher_rows():
    rows = [{"passage_id": "7", "text": "Ada met Babbage in London.",
             "entities": [["Ada", "person"], ["Babbage", "person"], ["London", "city"],
                          ["Ada", "person"]]}]
    (p,) = read_teacher_rows(rows)
    assert p.positives == {"person": ["Ada", "Babbage"], "city": ["London"]}
    assert isinstance(p, Passage)
