"""Corpus extraction on Ray Data: the predictor, inputs, exactly-once results across
injected failures, a killed actor, a failed run and reruns; the CLI."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spacy_uniner.extraction import (
    ExtractOptions,
    ExtractPredictor,
    PipelineSpec,
    _check_manifest,
    _normalize,
    extract,
    find_component,
    halves,
    read_documents,
    read_input,
    warm_up_texts,
)
from spacy_uniner.prompts import parse_query

from .conftest import EXIT_MARKER, FAIL_MARKER, LABELS, document_text, expected_entities

N_DOCS = 320
FAILING = {7, 77, 207}  # the student raises on these
EXITING = {40, 250}  # the first of these each time the flag is re-armed ends its actor
NO_TEXT = 300


def write_corpus(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(N_DOCS):
            marker = FAIL_MARKER if i in FAILING else EXIT_MARKER if i in EXITING else ""
            record = {"id": i, "text": None if i == NO_TEXT else document_text(i, marker)}
            handle.write(json.dumps(record) + "\n")
    return path


def entity_rows(out: Path) -> list:
    table = pq.read_table(out / "entities.parquet")
    assert table.column_names == ["doc_id", "label", "start_char", "end_char", "text", "score"]
    return table.to_pylist()


def status_rows(out: Path) -> list:
    table = pq.read_table(out / "status.parquet")
    assert table.column_names == ["doc_id", "status", "error", "entities", "run_id"]
    return table.to_pylist()


def assert_consistent(out: Path) -> dict:
    """Every id once in status; entities only for ok documents, matching their counts."""
    status = status_rows(out)
    counts = Counter(row["doc_id"] for row in status)
    assert max(counts.values(), default=1) == 1, [k for k, v in counts.items() if v > 1]
    by_id = {row["doc_id"]: row for row in status}
    per_doc = Counter(row["doc_id"] for row in entity_rows(out))
    for doc_id, n in per_doc.items():
        assert by_id[doc_id]["status"] == "ok" and by_id[doc_id]["entities"] == n
    return by_id


def test_predictor_call_on_a_plain_dict(scripted_pipeline_dir):
    predictor = ExtractPredictor(
        PipelineSpec(labels=tuple(LABELS), pipeline=str(scripted_pipeline_dir)), batch_size=8
    )
    texts = [document_text(0), document_text(1, FAIL_MARKER), "", document_text(3), None]
    table = predictor(
        {
            "doc_id": ["a", "b", "c", "d", "e"],
            "text": texts,
            "input_error": [None, None, None, None, "no text in field 'text'"],
        }
    )
    assert isinstance(table, pa.Table)
    rows = table.to_pylist()
    assert [(r["doc_id"], r["status"]) for r in rows] == [
        ("a", "ok"),
        ("b", "error"),
        ("c", "ok"),
        ("d", "ok"),
        ("e", "error"),
    ]
    # one failing document does not take its batch-mates down with it
    assert (
        rows[1]["error"]
        == f"RuntimeError: scripted failure on a passage containing {FAIL_MARKER!r}"
    )
    assert rows[4]["error"] == "no text in field 'text'"
    assert rows[2]["entities"] == [] and rows[4]["entities"] == []
    for row, text in ((rows[0], texts[0]), (rows[3], texts[3])):
        got = [
            (e["label"], e["start_char"], e["end_char"], e["text"], e["score"])
            for e in row["entities"]
        ]
        assert [g[:4] for g in got] == [e[:4] for e in expected_entities(text)]
        assert [g[4] for g in got] == pytest.approx([e[4] for e in expected_entities(text)])
        assert all(text[s:e] == t for _, s, e, t, _ in got)
    # labels are passed per call: a predictor asking only for cities finds only cities
    cities = ExtractPredictor(PipelineSpec(labels=("city",), pipeline=str(scripted_pipeline_dir)))
    only = cities({"doc_id": ["x"], "text": [texts[0]]}).to_pylist()[0]
    assert [e["label"] for e in only["entities"]] == ["city"]


def test_predictor_warms_up_on_full_windows(scripted_pipeline_dir):
    predictor = ExtractPredictor(
        PipelineSpec(labels=tuple(LABELS), pipeline=str(scripted_pipeline_dir)), batch_size=4
    )
    _, component = find_component(predictor.nlp, "test")
    wrapper, student = component.model, component.model.student
    tokens = component.max_passage_tokens
    # a student without batch_size decodes one query at a time: one full window
    asked = [parse_query(p) for p in student.prompts]
    assert sorted(label for _, label in asked) == sorted(LABELS)
    passages = {passage for passage, _ in asked}
    assert len(passages) == 1
    assert len(student.token_offsets(passages.pop())) == tokens
    # enough windows to fill the rows decoded together (one per label), at most `most`
    wrapper.batch_size = 5
    texts = warm_up_texts(component, LABELS, most=16)
    assert len(texts) == 3  # ceil(5 rows / 2 labels)
    assert len(set(texts)) == 3 and len({t.split()[1] for t in texts}) == 3
    assert all(len(student.token_offsets(t)) == tokens for t in texts)
    assert len(warm_up_texts(component, LABELS, most=2)) == 2
    wrapper.batch_size = 1
    assert len(warm_up_texts(component, ["person"] * 4, most=16)) == 1
    # the warm-up leaves the predictor answering as before
    student.prompts.clear()
    row = predictor({"doc_id": ["a"], "text": [document_text(0)]}).to_pylist()[0]
    assert row["status"] == "ok" and len(student.prompts) == len(LABELS)


def test_exactly_once_through_failures_a_killed_actor_and_reruns(
    ray_cluster, scripted_pipeline_dir, exit_flag, tmp_path
):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"

    def options(**kwargs):
        settings = dict(
            input=corpus,
            output=out,
            labels=LABELS,
            pipeline=scripted_pipeline_dir,
            actors=2,
            batch_size=16,
            progress=False,
        )
        return ExtractOptions(**{**settings, **kwargs})

    all_ids = {str(i) for i in range(N_DOCS)}
    errors = {str(i) for i in FAILING | {NO_TEXT}}

    # 1. the first 150 documents; the batch holding document 40 ends its actor, and
    #    Ray Data starts a new one and runs the batch again.
    exit_flag.unlink(missing_ok=True)
    first = extract(options(limit=150))
    assert exit_flag.exists(), "no actor was killed"
    assert first["run"]["processed"] == 150 and first["run"]["finished"]
    status = assert_consistent(out)
    assert set(status) == {str(i) for i in range(150)}
    assert status["40"]["status"] == "ok"
    # one part per batch: 16 documents each, the last one per actor (16 and 6) in halves;
    # a killed run loses at most the batches in flight
    assert len(list((out / "parts").glob("part-*.parquet"))) == 12
    assert {k for k, v in status.items() if v["status"] == "error"} == {"7", "77"}

    # 2. re-armed, and no retry for a batch whose actor dies: document 250 ends the
    #    run half-way. What was written stays whole and consistent. The documents
    #    recorded as errors count as done.
    exit_flag.unlink()
    with pytest.raises(Exception):
        extract(options(actor_retries=0))
    assert exit_flag.exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["finished"] is False and summary["run"]["error"]
    assert summary["run"]["already_done"] == 150
    assert 0 < summary["run"]["extract_seconds"] < summary["run"]["seconds"]
    status = assert_consistent(out)
    assert set(status) >= {str(i) for i in range(150)} and "250" not in status
    done_before = len(status)
    errors_before = {k for k, v in status.items() if v["status"] == "error"}
    assert {"7", "77"} <= errors_before

    # 3. the rerun does exactly the rest, and (asked to) the errors again: their
    #    new rows replace the old ones.
    third = extract(options(retry_errors=True))
    assert third["run"]["processed"] == N_DOCS - done_before + len(errors_before)
    assert third["run"]["already_done"] == done_before - len(errors_before)
    assert third["run"]["duplicate_ids"] == 0
    status = assert_consistent(out)
    assert set(status) == all_ids
    assert {k for k, v in status.items() if v["status"] == "error"} == errors
    assert {status[k]["run_id"] for k in errors} == {third["run"]["run_id"]}
    assert status["0"]["run_id"] == first["run"]["run_id"]
    assert status[str(NO_TEXT)]["error"] == "no text in field 'text'"
    assert FAIL_MARKER in status["207"]["error"]
    found = {}
    for row in entity_rows(out):
        found.setdefault(row["doc_id"], []).append(
            (row["label"], row["start_char"], row["end_char"], row["text"])
        )
    for doc_id in all_ids - errors:
        assert sorted(found[doc_id], key=lambda e: (e[1], e[0])) == [
            e[:4] for e in expected_entities(document_text(int(doc_id)))
        ]
    assert third["documents"] == N_DOCS and third["errors"] == len(errors)
    assert third["entities"] == 2 * (N_DOCS - len(errors))

    # 4. results made with other labels are not mixed in
    with pytest.raises(ValueError, match="labels"):
        extract(options(labels=["person"]))


def test_actors_run_the_predictor_class_given(ray_cluster, scripted_pipeline_dir, tmp_path):
    stamps = tmp_path / "stamps.jsonl"

    class Counting(ExtractPredictor):  # local: Ray ships it to the actors by value
        def __call__(self, batch):
            out = super().__call__(batch)
            with open(stamps, "a", encoding="utf-8") as f:
                f.write(json.dumps({"rows": out.num_rows}) + "\n")
            return out

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": str(i), "text": document_text(i)}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    options = ExtractOptions(
        input=corpus,
        output=tmp_path / "out",
        labels=LABELS,
        pipeline=scripted_pipeline_dir,
        actors=1,
        batch_size=8,
        progress=False,
    )
    summary = extract(options, predictor=Counting)
    assert summary["run"]["ok"] == 20
    calls = [json.loads(line)["rows"] for line in stamps.read_text().splitlines()]
    assert sorted(calls) == [2, 2, 8, 8]  # 8, 8, 4: the last block (one per actor) in halves
    with pytest.raises(TypeError, match="predictor must be ExtractPredictor or a subclass"):
        extract(options, predictor=dict)


def test_txt_folder_through_ray_data(ray_cluster, tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Ada Lovelace in London.", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Grace Hopper.", encoding="utf-8")
    (folder / "bad.txt").write_bytes(b"\xff\xfe caf\xe9")
    ds, kind, id_field = read_input(folder)
    assert (kind, id_field) == ("txt", None)
    blocks = read_documents(
        ds,
        kind=kind,
        root=str(folder.resolve()),
        text_field="text",
        id_field=None,
        done=pa.array(["a.txt"]),
    )
    rows = [row for block in blocks for row in block.to_pylist()]
    by_id = {row["doc_id"]: row for row in rows}
    assert set(by_id) == {"sub/b.txt", "bad.txt"}  # a.txt is done already
    assert (
        by_id["sub/b.txt"]["text"] == "Grace Hopper." and by_id["sub/b.txt"]["input_error"] is None
    )
    assert by_id["bad.txt"]["text"] is None
    assert by_id["bad.txt"]["input_error"].startswith("not UTF-8 text")


class _Read:
    """A read whose own blocks have the given sizes (all read_documents asks of a Dataset)."""

    def __init__(self, sizes):
        start, self.tables = 0, []
        for size in sizes:
            ids = [f"d{i}" for i in range(start, start + size)]
            self.tables.append(pa.table({"id": ids, "text": [f"text {i}" for i in ids]}))
            start += size

    def iter_batches(self, batch_size=None, batch_format="pyarrow"):
        return iter(self.tables)


@pytest.mark.parametrize(
    "sizes,done,limit,expected",
    [
        ([50, 50, 50, 50], [], None, [16] * 12 + [8]),  # no short block between reads
        ([3, 1, 7, 0, 30], [], None, [16, 16, 9]),
        ([20, 20], ["d0", "d17", "d25"], None, [16, 16, 5]),  # done ids are not counted
        ([20, 20], [], 21, [16, 5]),
        ([10], [], None, [10]),
    ],
)
def test_blocks_are_exactly_the_batch_size_but_the_last(sizes, done, limit, expected):
    blocks = list(
        read_documents(
            _Read(sizes),
            kind="jsonl",
            root="",
            text_field="text",
            id_field="id",
            done=pa.array(done, pa.string()),
            limit=limit,
            block_rows=16,
        )
    )
    assert [block.num_rows for block in blocks] == expected
    ids = [row["doc_id"] for block in blocks for row in block.to_pylist()]
    wanted = [f"d{i}" for i in range(sum(sizes)) if f"d{i}" not in done][:limit]
    assert ids == wanted  # in input order, each once


def test_halves_cut_each_block_in_order():
    blocks = [pa.table({"id": [f"{n}.{i}" for i in range(n)]}) for n in (16, 5, 1, 0)]
    out = halves(blocks)
    assert [b.num_rows for b in out] == [8, 8, 3, 2, 1, 0]
    assert [r["id"] for b in out for r in b.to_pylist()] == [
        r["id"] for b in blocks for r in b.to_pylist()
    ]


def test_records_get_ids_and_bad_rows_are_named():
    table = pa.table({"key": [5, 6, None], "body": ["one", "two", "three"]})
    out = _normalize(
        table, kind="parquet", root="", text_field="body", id_field="key", done=pa.array(["6"])
    ).to_pylist()
    assert [(r["doc_id"], r["text"], r["input_error"]) for r in out] == [
        ("5", "one", None),
        (out[1]["doc_id"], "three", "no id in field 'key'"),
    ]
    assert out[1]["doc_id"].startswith("<no id>:")
    numbers = _normalize(
        pa.table({"id": ["a"], "text": [4]}),
        kind="jsonl",
        root="",
        text_field="text",
        id_field="id",
        done=None,
    ).to_pylist()
    assert numbers == [
        {"doc_id": "a", "text": None, "input_error": "field 'text' holds int, not text"}
    ]
    # without an id field, identical texts are one document
    hashed = (
        _normalize(
            pa.table({"text": ["same", "same", "other"]}),
            kind="jsonl",
            root="",
            text_field="text",
            id_field=None,
            done=None,
        )
        .column("doc_id")
        .to_pylist()
    )
    assert hashed[0] == hashed[1] != hashed[2] and len(hashed[0]) == 32


def test_bad_inputs_are_named(tmp_path):
    pq.write_table(pa.table({"key": [5], "body": ["one"]}), tmp_path / "docs.parquet")
    with pytest.raises(ValueError, match=r"docs\.parquet: no field 'text' \(fields: key, body\)"):
        read_input(tmp_path / "docs.parquet")
    with pytest.raises(ValueError, match="no field 'uid'"):
        read_input(tmp_path / "docs.parquet", text_field="body", id_field="uid")
    with pytest.raises(FileNotFoundError, match="nothing.jsonl: no such file"):
        read_input(tmp_path / "nothing.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "x"\n')
    with pytest.raises(ValueError, match="broken.jsonl: could not read it as jsonl"):
        read_input(tmp_path / "broken.jsonl")
    (tmp_path / "notes.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match="notes.csv: unsupported input"):
        read_input(tmp_path / "notes.csv")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.txt").write_text("x")
    (mixed / "b.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="one kind of input.*found jsonl, txt"):
        read_input(mixed)
    with pytest.raises(ValueError, match="not both"):
        ExtractOptions(
            input=mixed, output=tmp_path / "o", labels=["x"], model="m", pipeline=mixed
        ).validate()
    with pytest.raises(ValueError, match="at least one label"):
        ExtractOptions(input=mixed, output=tmp_path / "o", labels=[]).validate()
    with pytest.raises(FileNotFoundError, match="nope: no such model folder"):
        ExtractOptions(
            input=mixed, output=tmp_path / "o", labels=["x"], model=str(tmp_path / "nope")
        ).validate()


def test_a_folder_without_results_takes_new_settings(tmp_path):
    (tmp_path / "parts").mkdir()
    _check_manifest(tmp_path, {"labels": ["a"]})
    _check_manifest(tmp_path, {"labels": ["b"]})  # nothing there yet: a new start
    pq.write_table(pa.table({"doc_id": ["1"]}), tmp_path / "parts" / "part-1.parquet")
    with pytest.raises(ValueError, match=r"labels: \['b'\] there, \['c'\] now"):
        _check_manifest(tmp_path, {"labels": ["c"]})


def test_cli_with_the_tiny_model(ray_cluster, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from ray_jobs.extract import app

    corpus = tmp_path / "corpus.parquet"
    pq.write_table(
        pa.table(
            {
                "doc": [f"d{i}" for i in range(12)],
                "body": [f"Ada Lovelace visited London {i}." for i in range(12)],
            }
        ),
        corpus,
    )
    out = tmp_path / "out"
    args = [
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--labels",
        "person, city",
        "--model",
        str(tiny_model_dir),
        "--actors",
        "2",
        "--batch-size",
        "4",
        "--max-new-tokens",
        "4",
        "--text-field",
        "body",
        "--id-field",
        "doc",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "documents: 12 (12 ok, 0 errors)" in result.output
    status = status_rows(out)
    assert sorted(r["doc_id"] for r in status) == sorted(f"d{i}" for i in range(12))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["processed"] == 12 and summary["run"]["docs_per_second"] > 0
    manifest = json.loads((out / "extract.json").read_text())
    assert manifest["labels"] == ["person", "city"] and manifest["model"] == str(tiny_model_dir)

    bad = CliRunner().invoke(
        app,
        [
            "--input",
            str(corpus),
            "--output",
            str(tmp_path / "other"),
            "--labels",
            "person",
            "--model",
            str(tiny_model_dir),
            "--no-progress",
        ],
    )
    assert bad.exit_code == 2 and "corpus.parquet: no field 'text'" in bad.output
    # a folder holding other results is refused, naming what differs
    other = CliRunner().invoke(app, [*args[:5], "person", *args[6:]])
    assert other.exit_code == 2 and "holds results made with other settings" in other.output
