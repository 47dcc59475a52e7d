"""The dev suite: the Pile-NER dev split, CoNLL-2003 / BC5CDR dev as plain questions,
and ``python -m eval.benchmark --suite dev`` end to end on the real shared files."""

import json
import random

import pytest
import spacy
from typer.testing import CliRunner

from eval.benchmark import app
from spacy_uniner.evaluation.benchmarks import (
    DEV_LIMIT,
    DEV_SUITE,
    SENTENCES_PER_PASSAGE,
    ZERO_SHOT,
    dev_suite,
    group_sentences,
    load_bio,
    load_pile_ner_dev,
)
from spacy_uniner.evaluation.label_maps import plain_label_map
from spacy_uniner.evaluation.runner import markdown_table
from spacy_uniner.splits import PILE_DEV_FRACTION, split_pile_ner
from spacy_uniner.training.data import _EVAL_PATTERNS, read_bio_passages, read_pile_ner

runner = CliRunner()
PILE = "pile-ner/pile_ner_type_subset.jsonl"


@pytest.fixture(scope="module")
def suite(shared_data):
    return dev_suite(shared_data)


@pytest.fixture(scope="module")
def pile_rows(shared_data):
    return [json.loads(line) for line in (shared_data / PILE).read_text().splitlines() if line]


# --- the Pile-NER split --------------------------------------------------------------


def test_pile_split_is_seeded_by_text_and_disjoint(shared_data):
    passages = read_pile_ner(shared_data / PILE)
    train, dev = split_pile_ner(passages)
    assert len(train) + len(dev) == len(passages) == 882
    assert abs(len(dev) / len(passages) - PILE_DEV_FRACTION) < 0.03
    assert not {p.text for p in train} & {p.text for p in dev}
    shuffled = list(passages)
    random.Random(7).shuffle(shuffled)
    assert {p.id for p in split_pile_ner(shuffled).dev} == {p.id for p in dev}, "order-free"
    assert [p.id for p in split_pile_ner(passages, seed=1).dev] != [p.id for p in dev]
    assert split_pile_ner(passages, fraction=0.0).dev == []


def test_pile_dev_asks_each_passage_only_its_queried_types(shared_data, pile_rows):
    bench = load_pile_ner_dev(shared_data / PILE)
    dev_ids = {p.id for p in split_pile_ner(read_pile_ner(shared_data / PILE)).dev}
    assert {p.id for p in bench.passages} == dev_ids
    queried = {}
    for row in pile_rows:
        pid = "pile-" + row["doc_question_pairID"].split(":")[0]
        queried.setdefault(pid, {})[" ".join(row["tagName"].split())] = json.loads(row["output"])
    multi = 0
    for p in bench.passages:
        assert p.labels is not None and bench.labels_of(p) == p.labels
        assert set(p.labels) == set(queried[p.id])  # no other type is asked or scored
        multi += len(p.labels) > 1
        assert {label for _, _, label in p.spans} <= set(p.labels)
        for label in p.labels:
            assert json.loads(p.answers[label]) == list(dict.fromkeys(queried[p.id][label]))
    assert multi > 10
    assert set(bench.labels) == {t for p in bench.passages for t in p.labels}
    assert bench.stats["queries"] == sum(len(p.labels) for p in bench.passages) == 199


# --- the suite's files ---------------------------------------------------------------


def test_dev_suite_never_reads_a_zero_shot_test_file(suite, shared_data):
    zero_shot_paths = {rel for _, _, rel in ZERO_SHOT.values()}
    for name, (_, rel, _) in DEV_SUITE.items():
        assert rel not in zero_shot_paths
        assert not _EVAL_PATTERNS.search(rel), rel
        assert not any(domain in rel.lower() for domain in
                       ("/ai/", "literature", "music", "politics", "science", "mit"))
        assert not _EVAL_PATTERNS.search(suite[name].source), suite[name].source
        assert str(shared_data / rel) in suite[name].source
    assert list(suite) == list(DEV_SUITE)


def test_bio_dev_sets_are_plain_questions_over_grouped_sentences(suite, shared_data):
    conll, bc5cdr = suite["conll2003-dev"], suite["bc5cdr-dev"]
    assert conll.labels == ["person", "location", "organization"]  # MISC is not asked
    assert bc5cdr.labels == ["chemical", "disease"]
    for bench, sentences in ((conll, 3250), (bc5cdr, 4581)):
        assert len(bench.passages) == DEV_LIMIT
        groups = -(-sentences // SENTENCES_PER_PASSAGE)
        assert bench.stats["sentences"] == sentences
        assert bench.stats["passages_in_file"] == groups
        for p in bench.passages:
            assert p.labels is None and set(p.answers) == set(bench.labels)
    # the natural names are the training side's plain questions (one mapping)
    assert conll.labels == [v for v in dict.fromkeys(plain_label_map("conll2003").values()) if v]
    again = dev_suite(shared_data, columns=["conll2003-dev"])
    assert [p.id for p in again["conll2003-dev"].passages] == [p.id for p in conll.passages]


def test_wide_dev_sets_ask_every_dev_type_with_empty_gold_for_the_foreign_ones(
    suite, shared_data
):
    wide = dev_suite(shared_data, wide=True)
    assert list(wide) == ["pile-ner-dev", "conll2003-dev-wide", "bc5cdr-dev-wide"]
    assert [p.id for p in wide["pile-ner-dev"].passages] == [
        p.id for p in suite["pile-ner-dev"].passages]  # per-passage types: unchanged
    conll, bc5cdr = wide["conll2003-dev-wide"], wide["bc5cdr-dev-wide"]
    assert conll.labels == ["person", "location", "organization", "chemical", "disease"]
    assert bc5cdr.labels == ["chemical", "disease", "person", "location", "organization"]
    for bench, plain in ((conll, suite["conll2003-dev"]), (bc5cdr, suite["bc5cdr-dev"])):
        assert bench.stats["queries"] == 5 * len(bench.passages) == 5 * DEV_LIMIT
        for p, q in zip(bench.passages, plain.passages):
            assert (p.id, p.text, p.spans) == (q.id, q.text, q.spans)
            assert {k: v for k, v in p.answers.items() if k in plain.labels} == q.answers
            assert all(p.answers[k] == "[]" for k in bench.labels if k not in plain.labels)
    # one set alone is still asked the other's types
    alone = dev_suite(shared_data, limit=3, wide=True, columns=["bc5cdr-dev"])
    assert list(alone) == ["bc5cdr-dev-wide"] and alone["bc5cdr-dev-wide"].labels == bc5cdr.labels


def test_group_sentences_moves_spans_and_matches_training_text(shared_data, slice_bio):
    path = slice_bio(shared_data / "benchmarks/bio/crossner/conll2003/dev.txt", 10)
    sentences = load_bio(path, label_map="conll2003")
    grouped = group_sentences(sentences, 4)
    assert [p.id for p in grouped.passages] == [f"{sentences.name}-g{k}" for k in range(3)]
    vocab = spacy.blank("en").vocab
    for k, p in enumerate(grouped.passages):
        chunk = sentences.passages[4 * k:4 * k + 4]
        assert p.text == " ".join(s.text for s in chunk)
        assert sorted(p.text[s:e] for s, e, _ in p.spans) == sorted(
            s.text[a:b] for s in chunk for a, b, _ in s.spans)
        assert len(p.spans) == sum(len(s.spans) for s in chunk)
        assert grouped.reference_doc(p, vocab).text == p.text
    training = read_bio_passages(path, "x", "conll2003")
    assert [t.text for t in training] == [p.text for p in grouped.passages]


def test_markdown_table_reports_n():
    scores = {m: {"f": 0.5} for m in ("strict", "partial", "uniner")}
    per = {"a": {**scores, "counts": {"passages": 200, "queries": 600}},
           "b": {**scores, "counts": {"passages": 131, "queries": 199}}}
    assert "| n: passages (queries) | 200 (600) | 131 (199) | 331 (799) |" in markdown_table(per)


# --- end to end ----------------------------------------------------------------------


def _gold_file(bench, path):
    """The benchmark's gold answers as a UniNER file (what test.OracleStudent.v1 reads)."""
    items = [{"id": f"{p.id}-{t}", "conversations": [
        {"from": "human", "value": f"Text: {p.text}"},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": f"What describes {t} in the text?"},
        {"from": "gpt", "value": p.answers[t]}]}
        for p in bench.passages for t in bench.labels_of(p)]
    path.write_text(json.dumps(items))
    return path


def test_dev_suite_cli_with_an_oracle(shared_data, tmp_path, oracle):
    benches = dev_suite(shared_data, limit=3)
    gold = tmp_path / "gold.json"
    items = []
    for b in benches.values():
        items += json.loads(_gold_file(b, tmp_path / "one.json").read_text())
    gold.write_text(json.dumps(items))
    cfg = tmp_path / "oracle.json"
    cfg.write_text(json.dumps({"@uniner_models": "test.OracleStudent.v1", "gold_file": str(gold)}))
    out = tmp_path / "dev"
    result = runner.invoke(app, ["--model-config", str(cfg), "--suite", "dev", "--limit", "3",
                                 "--max-passage-tokens", "4096", "--passages-per-batch", "2",
                                 "--shared-data", str(shared_data), "--output", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["datasets"]) == list(DEV_SUITE) and m["run"]["suite"] == "dev"
    assert m["averages"]["overall"]["datasets"] == 3 and "CrossNER" not in m["averages"]
    pile = benches["pile-ner-dev"]
    for name, ds in m["datasets"].items():
        assert ds["counts"]["passages"] == 3
        assert ds["counts"]["gold_spans"] > 0
        for metric in ("strict", "partial", "uniner"):
            assert ds[metric]["f"] == pytest.approx(1.0), (name, metric)
    assert m["datasets"]["pile-ner-dev"]["counts"]["queries"] == sum(
        len(p.labels) for p in pile.passages)
    asked = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        asked.setdefault((rec["dataset"], rec["passage_id"]), []).append(rec["type"])
    for p in pile.passages:
        assert sorted(asked[("pile-ner-dev", p.id)]) == sorted(p.labels)
    table = (out / "results.md").read_text()
    assert "(paper)" not in table and "| n: passages (queries) | 3 (" in table
    assert "dev suite" in table

    # a rerun with a larger sample reuses the cache of the per-passage Pile set
    oracle.calls_total = 0
    more = runner.invoke(app, ["--model-config", str(cfg), "--suite", "dev", "--only",
                               "pile-ner-dev", "--limit", "5", "--max-passage-tokens", "4096",
                               "--shared-data", str(shared_data), "--output", str(out),
                               "--quiet"])
    assert more.exit_code == 0, more.output
    counts = json.loads((out / "metrics.json").read_text())["datasets"]["pile-ner-dev"]["counts"]
    assert counts["passages"] == 5 and counts["passages_from_cache"] == 3


def test_dev_suite_default_limit_and_unknown_column(shared_data, tmp_path):
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"@uniner_models": "test.ScriptedStudent.v1", "replies": {}}))
    out = tmp_path / "bc5cdr"
    result = runner.invoke(app, ["--model-config", str(cfg), "--suite", "dev", "--only",
                                 "bc5cdr-dev", "--shared-data", str(shared_data),
                                 "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["limit"] == DEV_LIMIT
    counts = m["datasets"]["bc5cdr-dev"]["counts"]
    assert counts["passages"] == DEV_LIMIT
    # two types per window; a few passages of 4 sentences take two 256-token windows
    assert counts["queries"] == 2 * counts["windows"] and counts["windows"] >= DEV_LIMIT
    bad = runner.invoke(app, ["--model-config", str(cfg), "--suite", "dev", "--only", "AI",
                              "--shared-data", str(shared_data), "--output", str(out)])
    assert bad.exit_code != 0 and "unknown columns" in bad.output


def test_wide_is_refused_outside_the_dev_suite(tmp_path):
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"@uniner_models": "test.ScriptedStudent.v1", "replies": {}}))
    result = runner.invoke(app, ["--model-config", str(cfg), "--suite", "zero-shot", "--wide"])
    assert result.exit_code != 0 and "--wide is a condition of --suite dev" in result.output


def test_lowercased_sets_keep_offsets_and_lower_the_gold(shared_data):
    from spacy_uniner.evaluation.benchmarks import lowercased

    suite = dev_suite(shared_data, limit=5, wide=True)
    for name, bench in suite.items():
        lower = lowercased(bench)
        assert lower.name == f"{bench.name}-lower" and lower.labels == bench.labels
        assert len(lower.passages) == len(bench.passages) == 5 or name == "pile-ner-dev"
        for p, q in zip(lower.passages, bench.passages):
            assert p.text == q.text.lower() and p.spans == q.spans and p.labels == q.labels
            for start, end, _ in p.spans:
                assert p.text[start:end] == q.text[start:end].lower()
            assert {k: json.loads(v) for k, v in p.answers.items()} == {
                k: [m.lower() for m in json.loads(v)] for k, v in q.answers.items()}
    # a character whose lower case is longer keeps its place (and the offsets after it)
    from spacy_uniner.evaluation.benchmarks import Benchmark, GoldPassage

    odd = Benchmark("odd", ["city"], [GoldPassage("p", ["İzmir", "AND", "Ankara"],
                                                  [True, True, False], [(10, 16, "city")],
                                                  {"city": json.dumps(["Ankara"])})])
    lowered = lowercased(odd).passages[0]
    assert lowered.text == "İzmir and ankara" and lowered.text[10:16] == "ankara"
    assert json.loads(lowered.answers["city"]) == ["ankara"]
