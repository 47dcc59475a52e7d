"""Loaders on small slices of the real shared files (written to tmp, never to the repo)."""

import json
import logging

import pytest
import spacy

from spacy_uniner.alignment import find_mentions
from spacy_uniner.benchmarks import (
    bio_entities,
    detect_column_order,
    load_benchmark,
    load_bio,
    load_uniner_json,
    zero_shot_suite,
)
from spacy_uniner.label_maps import builtin_label_maps, load_label_map, readable_tag


@pytest.fixture(scope="module")
def vocab():
    return spacy.blank("en").vocab


# --- UniNER JSON ---------------------------------------------------------------------


def test_uniner_json_groups_queries_into_passages(ai_slice, vocab):
    bench = load_uniner_json(ai_slice, name="ai")
    assert len(bench.passages) == 4
    assert len(bench.labels) == 13 and "program language" in bench.labels
    first = bench.passages[0]
    assert first.id == "CrossNER_AI_0"
    assert first.text.startswith("Typical generative model approaches include naive Bayes")
    assert set(first.answers) == set(bench.labels)
    doc = bench.reference_doc(first, vocab)
    assert doc.text == first.text
    assert "classifier" in [t.text for t in doc] and "s" in [t.text for t in doc]
    got = [(s.text, s.label_) for s in doc.spans["universal_ner"]]
    assert got == [("naive Bayes classifier", "algorithm"), ("Gaussian mixture model", "algorithm"),
                   ("variational autoencoders", "algorithm")]
    assert json.loads(doc.user_data["uniner_gold"]["algorithm"])[0] == "naive Bayes classifier"


def test_uniner_json_gold_mentions_become_every_occurrence(shared_data, slice_uniner):
    src = shared_data / "benchmarks/uniner/CrossNER_AI.json"
    bench = load_uniner_json(slice_uniner(src, 60))
    checked = 0
    for p in bench.passages:
        for label, answer in p.answers.items():
            for mention in set(json.loads(answer)):
                expected = {(s, e, label) for s, e in find_mentions(p.text, mention)}
                assert expected and expected <= set(p.spans)
                checked += len(expected) > 1
    assert checked, "the slice should hold a mention that occurs more than once"


def test_uniner_json_full_file_grouping_and_sampling(shared_data):
    # 430 distinct texts but 431 passages: two consecutive identical sentences
    # are split because a type repeats.
    path = shared_data / "benchmarks/uniner/CrossNER_AI.json"
    bench = load_uniner_json(path, limit=3, seed=1)
    assert bench.stats["passages_in_file"] == 431
    assert bench.stats["queries"] == 3 * 13
    again = load_uniner_json(path, limit=3, seed=1)
    assert [p.id for p in bench.passages] == [p.id for p in again.passages]
    other = load_uniner_json(path, limit=3, seed=2)
    assert [p.id for p in bench.passages] != [p.id for p in other.passages]


def test_uniner_json_counts_gold_not_in_text(tmp_path):
    item = {"id": "x0", "conversations": [
        {"from": "human", "value": "Text: Ada Lovelace wrote notes ."},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": '["Ada Lovelace", "Charles Babbage"]'}]}
    path = tmp_path / "x.json"
    path.write_text(json.dumps([item]))
    bench = load_uniner_json(path)
    assert bench.stats["gold_mentions_not_found"] == 1
    assert bench.passages[0].spans == [(0, 12, "person")]


def test_uniner_json_rejects_other_formats(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": 1, "conversations": [{"value": "hello"}]}]))
    with pytest.raises(ValueError, match="4 turns"):
        load_uniner_json(path)


# --- BIO -----------------------------------------------------------------------------


def test_bio_token_tag_slice_of_crossner(shared_data, slice_bio, vocab):
    path = slice_bio(shared_data / "benchmarks/bio/crossner/ai/test.txt", 3)
    bench = load_bio(path, label_map="crossner_ai")
    assert bench.source.endswith("(token-tag)")
    assert len(bench.passages) == 3
    first = bench.passages[0]
    doc = bench.reference_doc(first, vocab)
    assert [t.text for t in doc][:6] == ["Typical", "generative", "model", "approaches", "include",
                                         "naive"]
    assert [(s.text, s.label_) for s in doc.spans["universal_ner"]] == [
        ("naive Bayes classifier", "algorithm"), ("Gaussian mixture model", "algorithm"),
        ("variational autoencoders", "algorithm")]
    assert json.loads(first.answers["algorithm"]) == [
        "naive Bayes classifier", "Gaussian mixture model", "variational autoencoders"]
    assert all(lab in builtin_label_maps()["crossner_ai"].values() for lab in bench.labels)


def test_bio_drops_tags_mapped_to_null(shared_data, slice_bio):
    path = slice_bio(shared_data / "benchmarks/bio/crossner/ai/test.txt", 40)
    raw = [line.split("\t")[1] for line in path.read_text().splitlines() if line.strip()]
    assert "B-misc" in raw
    bench = load_bio(path, label_map="crossner_ai")
    assert bench.stats["dropped_entities"] == raw.count("B-misc")
    assert "misc" not in bench.labels
    kept = load_bio(path)  # no map: raw tags kept
    assert "misc" in kept.labels
    assert kept.stats["gold_spans"] == bench.stats["gold_spans"] + raw.count("B-misc")


def test_bio_reversed_columns_detected_on_mit_movie(shared_data, slice_bio):
    path = slice_bio(shared_data / "benchmarks/bio/mit/movie/test.txt", 5)
    auto = load_benchmark(path, "bio", label_map="mit_movie")
    given = load_benchmark(path, "bio-rev", label_map="mit_movie")
    assert auto.source.endswith("(tag-token)")
    assert [p.spans for p in auto.passages] == [p.spans for p in given.passages]
    first = auto.passages[0]
    assert first.text == "are there any good romantic comedies out right now"
    assert first.spans == [(19, 36, "genre"), (41, 50, "year")]


def test_bio_wrong_column_order_is_an_error(shared_data, slice_bio):
    path = slice_bio(shared_data / "benchmarks/bio/mit/movie/test.txt", 2)
    with pytest.raises(ValueError, match="Not a BIO tag"):
        load_bio(path, column_order="token-tag")


def test_column_order_ambiguous_is_an_error():
    with pytest.raises(ValueError, match="Cannot tell"):
        detect_column_order([[("O", "O"), ("B-x", "O")]])


def test_iob1_iob2_and_bioes_decoding():
    # IOB1: I- opens an entity; B- separates two adjacent entities of one type.
    ents, i_starts = bio_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"])
    assert ents == [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (5, 6, "ORG")]
    assert i_starts == 3
    ents, i_starts = bio_entities(["B-PER", "I-PER", "O", "B-LOC", "B-LOC"])
    assert ents == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")] and i_starts == 0
    ents, _ = bio_entities(["S-PER", "B-LOC", "E-LOC", "U-ORG"])
    assert ents == [(0, 1, "PER"), (1, 3, "LOC"), (3, 4, "ORG")]


def test_iob2_scheme_flags_iob1_input(tmp_path, caplog):
    path = tmp_path / "iob1.txt"
    path.write_text("Ada\tI-PER\nLovelace\tI-PER\nwrote\tO\n\nBabbage\tB-PER\n")
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        bench = load_bio(path, scheme="iob2")
    assert bench.stats["invalid_iob2"] == 1
    assert bench.passages[0].spans == [(0, 12, "PER")]
    assert "not IOB2" in caplog.text


# --- label maps ----------------------------------------------------------------------


def test_user_label_map_overrides_and_unmapped_tags_fall_back(tmp_path, caplog):
    data = tmp_path / "d.txt"
    data.write_text("Ada\tB-PER\nin\tO\nParis\tB-GPE_CITY\n")
    user = tmp_path / "map.json"
    user.write_text(json.dumps({"PER": "human being"}))
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        bench = load_bio(data, label_map=str(user))
    assert bench.labels == ["human being", "gpe city"]
    assert "GPE_CITY" in caplog.text


def test_label_map_validation(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"PER": ""}))
    with pytest.raises(ValueError, match="non-empty string"):
        load_label_map(bad)
    with pytest.raises(FileNotFoundError, match="built-in"):
        load_label_map("no_such_map")
    assert load_label_map({"A": None}) == {"A": None}
    assert readable_tag("RATINGS_AVERAGE") == "ratings average"


def test_builtin_maps_name_the_issue_examples():
    maps = builtin_label_maps()
    assert maps["crossner_ai"]["programlang"] == "programming language"
    assert maps["mit_movie"]["RATINGS_AVERAGE"] == "average ratings"
    assert maps["crossner_ai"]["misc"] is None


# --- the zero-shot suite -------------------------------------------------------------


def test_zero_shot_suite_mit_movie_from_bio(shared_data):
    suite = zero_shot_suite(shared_data, limit=2, columns=["Movie", "Restaurant"])
    movie = suite["Movie"]
    assert movie.name == "mit-movie"
    assert movie.stats["passages_in_file"] == 2443
    assert movie.labels == ["actor", "character", "director", "genre", "plot", "rating",
                            "average ratings", "review", "song", "title", "trailer", "year"]
    assert suite["Restaurant"].labels[:4] == ["Amenity", "Location", "Cuisine", "Restaurant Name"]
    assert len(movie.passages) == len(suite["Restaurant"].passages) == 2


def test_uniner_passage_text_is_kept_exactly(tmp_path, vocab):
    """The prompt must hold the file's passage unchanged, odd whitespace included."""
    text = " Ada  Lovelace\twrote\n notes . "
    item = {"id": "w", "conversations": [
        {"from": "human", "value": f"Text: {text}"},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": '["Ada Lovelace"]'}]}
    path = tmp_path / "w.json"
    path.write_text(json.dumps([item]))
    passage = load_uniner_json(path).passages[0]
    assert passage.text == text
    doc = load_uniner_json(path).reference_doc(passage, vocab)
    assert doc.text == text
    assert [s.text for s in doc.spans["universal_ner"]] == ["Ada  Lovelace"]
