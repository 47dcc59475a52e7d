"""Loaders on small slices of the real shared files (written to tmp, never to the repo)."""

import json
import logging

import pytest
import spacy

from spacy_uniner.alignment import find_mentions
from spacy_uniner.evaluation.benchmarks import (
    bio_entities,
    detect_column_order,
    load_benchmark,
    load_bio,
    load_uniner_json,
    zero_shot_suite,
)
from spacy_uniner.evaluation.label_maps import (
    builtin_label_maps,
    load_label_map,
    plain_label_map,
    readable_tag,
)


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
        bench = load_bio(path, scheme="iob2", label_map="conll2003")
    assert bench.stats["invalid_iob2"] == 1
    assert bench.passages[0].spans == [(0, 12, "person")]
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


CONLL_STANDARD = (
    "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n\n"
    "Peter\tB-PER\nBlackburn\tI-PER\nin\tO\nLondon\tB-LOC\n"
)


def test_standard_conll_tags_map_through_conll2003(tmp_path):
    path = tmp_path / "conll.txt"
    path.write_text(CONLL_STANDARD)
    bench = load_bio(path, label_map="conll2003")
    assert bench.labels == ["person", "location", "organization", "miscellaneous entity"]
    assert [p.spans for p in bench.passages] == [
        [(0, 2, "organization"), (11, 17, "miscellaneous entity")],
        [(0, 15, "person"), (19, 25, "location")],
    ]
    # plain questions leave the catch-all out, whichever name it goes by
    assert load_bio(path, label_map=plain_label_map("conll2003")).labels == [
        "person", "location", "organization"]
    crossner_style = load_label_map("conll2003")
    assert crossner_style["organisation"] == crossner_style["ORG"] == "organization"


def test_capital_tags_without_a_map_are_refused_naming_the_file_and_a_map(tmp_path):
    path = tmp_path / "conll.txt"
    path.write_text(CONLL_STANDARD)
    with pytest.raises(ValueError) as err:
        load_bio(path)
    message = str(err.value)
    assert str(path) in message and "LOC, MISC, ORG, PER" in message
    assert "--label-map conll2003" in message and "What describes ORG" in message
    movie = tmp_path / "movie.txt"
    movie.write_text("B-ACTOR\tTom\nI-ACTOR\tHanks\nO\tfilms\n")
    with pytest.raises(ValueError, match=r"movie\.txt: .*--label-map mit_movie"):
        load_bio(movie)
    odd = tmp_path / "odd.txt"
    odd.write_text("Ada\tB-HUMAN\n")
    with pytest.raises(ValueError, match=r"odd\.txt: .*--label-map with a JSON file"):
        load_bio(odd)
    assert load_bio(odd, label_map={"HUMAN": "HUMAN"}).labels == ["HUMAN"]  # kept on purpose
    assert load_bio(tmp_path / "conll.txt", label_map="conll2003").labels  # a map: fine


def test_malformed_benchmark_files_name_the_file_and_the_position(tmp_path):
    item = {"id": "a", "conversations": [
        {"from": "human", "value": "Text: Ada Lovelace wrote."},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": '["Ada Lovelace"]'}]}
    truncated = tmp_path / "cut.json"
    truncated.write_text(json.dumps([item, item], indent=1)[:-40])
    with pytest.raises(ValueError, match=r"cut\.json: not valid JSON \(.* at line \d+, column \d+"):
        load_uniner_json(truncated)
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(json.dumps([item]).replace("Ada", "Ad\u00e9").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.json: not UTF-8 text \(.* at byte \d+"):
        load_uniner_json(not_utf8)
    wrong_item = tmp_path / "items.json"
    wrong_item.write_text(json.dumps([item, "not a conversation"]))
    with pytest.raises(ValueError, match=r"items\.json\[1\]: expected 'conversations'"):
        load_uniner_json(wrong_item)
    an_object = tmp_path / "object.json"
    an_object.write_text(json.dumps(item))
    with pytest.raises(ValueError, match=r"object\.json: expected a JSON list .* got a JSON dict"):
        load_uniner_json(an_object)
    bio = tmp_path / "bad.txt"
    bio.write_bytes(b"Ada\tB-person\nwrote\tO\n\nCaf\xe9\tO\n")
    with pytest.raises(ValueError, match=r"bad\.txt:4: not UTF-8 text"):
        load_bio(bio)
    bio.write_text("Ada\tB-person\nwrote\tO\n\nParis\tB-city\nis\tX-y\n")
    with pytest.raises(ValueError, match=r"bad\.txt:4 \(sentence 1\): Not a BIO tag at token 1"):
        load_bio(bio, column_order="token-tag")
    bad_map = tmp_path / "map.json"
    bad_map.write_text('{"PER": "person",')
    with pytest.raises(ValueError, match=r"map\.json: not valid JSON \(.* at line 1, column"):
        load_label_map(bad_map)


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
