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
    InputRow,
    PipelineSpec,
    check_input,
    document_blocks,
    extract,
    find_component,
    halves,
    read_input,
    warm_up_texts,
)
from spacy_uniner.extraction.store import atomic_write_table, check_manifest, write_manifest
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


def test_txt_folder_is_read_in_order_with_bad_files_named(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Ada Lovelace in London.", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Grace Hopper.", encoding="utf-8")
    (folder / "bad.txt").write_bytes(b"\xff\xfe caf\xe9")
    (folder / ".hidden.txt").write_text("not a document", encoding="utf-8")
    source = read_input(folder)
    assert (source.kind, source.id_field) == ("txt", None)
    blocks = list(document_blocks(source.rows(), done=["a.txt"]))
    rows = [row for block in blocks for row in block.to_pylist()]
    assert [row["doc_id"] for row in rows] == ["bad.txt", "sub/b.txt"]  # a.txt is done already
    by_id = {row["doc_id"]: row for row in rows}
    assert by_id["sub/b.txt"] == {
        "doc_id": "sub/b.txt", "text": "Grace Hopper.", "input_error": None
    }
    assert by_id["bad.txt"]["text"] is None
    assert by_id["bad.txt"]["input_error"].startswith("not UTF-8 text")


def _rows(count, start=0):
    return [InputRow(f"d{i}", f"text {i}", None, f"line {i}", True)
            for i in range(start, start + count)]


@pytest.mark.parametrize(
    "count,done,limit,expected",
    [
        (200, [], None, [16] * 12 + [8]),
        (41, [], None, [16, 16, 9]),
        (40, ["d0", "d17", "d25"], None, [16, 16, 5]),  # done ids are not counted
        (40, [], 21, [16, 5]),
        (10, [], None, [10]),
    ],
)
def test_blocks_are_exactly_the_batch_size_but_the_last(count, done, limit, expected):
    blocks = list(document_blocks(_rows(count), done=done, limit=limit, block_rows=16))
    assert [block.num_rows for block in blocks] == expected
    ids = [row["doc_id"] for block in blocks for row in block.to_pylist()]
    wanted = [f"d{i}" for i in range(count) if f"d{i}" not in done][:limit]
    assert ids == wanted  # in input order, each once


def test_document_blocks_send_each_id_once():
    rows = _rows(3) + _rows(2) + [InputRow("d1", "other text", None, "line 9", True)]
    blocks = list(document_blocks(rows, block_rows=16))
    assert [r["doc_id"] for b in blocks for r in b.to_pylist()] == ["d0", "d1", "d2"]
    assert blocks[0].to_pylist()[1]["text"] == "text 1"  # the first row of the id


def test_halves_cut_each_block_in_order():
    blocks = [pa.table({"id": [f"{n}.{i}" for i in range(n)]}) for n in (16, 5, 1, 0)]
    out = halves(blocks)
    assert [b.num_rows for b in out] == [8, 8, 3, 2, 1, 0]
    assert [r["id"] for b in out for r in b.to_pylist()] == [
        r["id"] for b in blocks for r in b.to_pylist()
    ]


def test_records_get_ids_and_bad_rows_are_named(tmp_path):
    pq.write_table(pa.table({"key": [5, 6, None], "body": ["one", "two", "three"]}),
                   tmp_path / "docs.parquet")
    source = read_input(tmp_path / "docs.parquet", text_field="body", id_field="key")
    out = [r for b in document_blocks(source.rows(), done=["6"]) for r in b.to_pylist()]
    assert [(r["doc_id"], r["text"], r["input_error"]) for r in out] == [
        ("5", "one", None),
        (out[1]["doc_id"], "three", "no id in field 'key'"),
    ]
    assert out[1]["doc_id"].startswith("<no id>:")
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"id": "a", "text": 4}\n', encoding="utf-8")
    assert [r for b in document_blocks(read_input(numbers).rows()) for r in b.to_pylist()] == [
        {"doc_id": "a", "text": None, "input_error": "field 'text' holds int, not text"}
    ]
    # without an id field, identical texts are one document
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["same", "same", "other"]))
    rows = list(read_input(same).rows())
    assert rows[0].doc_id == rows[1].doc_id != rows[2].doc_id and len(rows[0].doc_id) == 32
    check = check_input(read_input(same))
    assert (check.rows, check.documents, check.repeated_texts, check.duplicate_rows) == (3, 2, 1, 0)


def test_bad_jsonl_lines_are_documents_of_their_own_naming_file_and_line(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id": "1", "text": "Ada Lovelace."}\n'  # a BOM on the first line
        b'{"id": "2", "text": "caf\xe9"}\n'  # latin-1, not UTF-8
        b"\n"
        b'{"id": "3", "text": "cut short"\n'
        b"[1, 2]\n"
        b'{"id": "4", "text": "bad \\ud800 surrogate"}\n'
        b'{"id": {"x": 1}, "text": "Grace Hopper."}\n'
        b'{"id": "5", "text": "Grace Hopper."}\n'
    )
    (folder / "b.jsonl").write_text('{"id": "6", "text": "Alan Turing."}\n', encoding="utf-8")
    source = read_input(folder)
    assert source.id_field == "id"
    rows = [r for b in document_blocks(source.rows()) for r in b.to_pylist()]
    got = [(r["doc_id"], r["input_error"]) for r in rows]
    assert got == [
        ("1", None),
        ("<bad line>:a.jsonl line 2",
         "a.jsonl line 2: not UTF-8 text (invalid continuation byte at byte 24)"),
        ("<bad line>:a.jsonl line 4",
         "a.jsonl line 4: not valid JSON (Expecting ',' delimiter at column 32)"),
        ("<bad line>:a.jsonl line 5", "a.jsonl line 5: holds a JSON list, not an object"),
        ("4", "field 'text': not valid Unicode (surrogates not allowed at character 4)"),
        ("<bad id>:a.jsonl line 7", "field 'id' holds dict, not an id"),
        ("5", None),
        ("6", None),
    ]
    assert rows[0]["text"] == "Ada Lovelace."
    # a file in which no line is a JSON object is refused, naming the first line
    (tmp_path / "notes.jsonl").write_text("id,text\n1,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes.jsonl: not JSON lines: no line holds a JSON "
                                         r"object \(first: notes.jsonl line 1: not valid JSON"):
        read_input(tmp_path / "notes.jsonl")


def test_the_fingerprint_is_the_documents_not_their_order(tmp_path):
    lines = [json.dumps({"id": i, "text": document_text(i)}) + "\n" for i in range(5)]
    (tmp_path / "a.jsonl").write_text("".join(lines))
    (tmp_path / "b.jsonl").write_text("".join(reversed(lines)))
    (tmp_path / "c.jsonl").write_text("".join(lines).replace("Note 3", "Note three"))
    a, b, c = (check_input(read_input(tmp_path / f"{n}.jsonl")) for n in "abc")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.fingerprint.startswith("5:") and (a.rows, a.documents) == (5, 5)


def test_bad_inputs_are_named(tmp_path):
    pq.write_table(pa.table({"key": [5], "body": ["one"]}), tmp_path / "docs.parquet")
    with pytest.raises(ValueError, match=r"docs\.parquet: no field 'text' \(fields: key, body\)"):
        read_input(tmp_path / "docs.parquet")
    with pytest.raises(ValueError, match="no field 'uid'"):
        read_input(tmp_path / "docs.parquet", text_field="body", id_field="uid")
    with pytest.raises(FileNotFoundError, match="nothing.jsonl: no such file"):
        read_input(tmp_path / "nothing.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "x"\n')
    with pytest.raises(ValueError, match="broken.jsonl: not JSON lines"):
        read_input(tmp_path / "broken.jsonl")
    pq_bad = tmp_path / "bad.parquet"
    pq_bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="bad.parquet: could not read it as parquet"):
        read_input(pq_bad)
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
    with pytest.raises(ValueError, match="dedupe must be one of"):
        ExtractOptions(input=mixed, output=tmp_path / "o", labels=["x"], dedupe="last").validate()
    with pytest.raises(FileNotFoundError, match="nope: no such model folder"):
        ExtractOptions(
            input=mixed, output=tmp_path / "o", labels=["x"], model=str(tmp_path / "nope")
        ).validate()


def test_a_folder_without_results_takes_new_settings(tmp_path):
    (tmp_path / "parts").mkdir()
    first = {"path": "a.jsonl", "documents": 1, "fingerprint": "1:aa"}
    assert check_manifest(tmp_path, {"labels": ["a"]}, first) == [first]
    write_manifest(tmp_path, {"labels": ["a"]}, [first])
    assert check_manifest(tmp_path, {"labels": ["b"]}) == []  # nothing there yet: a new start
    pq.write_table(pa.table({"doc_id": ["1"]}), tmp_path / "parts" / "part-1.parquet")
    with pytest.raises(ValueError, match=r"labels: \['a'\] there, \['c'\] now"):
        check_manifest(tmp_path, {"labels": ["c"]})
    # with results, another input is refused unless appended
    other = {"path": "b.jsonl", "documents": 2, "fingerprint": "2:bb"}
    assert check_manifest(tmp_path, {"labels": ["a"]}, first) == [first]
    with pytest.raises(ValueError, match=r"holds results for another input: a.jsonl \(1 documents"
                                         r", fingerprint 1:aa\); b.jsonl has 2 documents"):
        check_manifest(tmp_path, {"labels": ["a"]}, other)
    assert check_manifest(tmp_path, {"labels": ["a"]}, other, append=True) == [first, other]


def _corpus(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_refusals_write_nothing(scripted_pipeline_dir, tmp_path):
    """Duplicate ids, an empty input and another input are refused before Ray starts
    or anything is written; the refusal names the input."""

    def options(corpus, out, **kwargs):
        return ExtractOptions(input=corpus, output=out, labels=LABELS,
                              pipeline=scripted_pipeline_dir, progress=False, **kwargs)

    records = [{"id": i % 4, "text": document_text(i)} for i in range(7)]  # 0-2 twice
    dup = _corpus(tmp_path / "dup.jsonl", records)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        extract(options(dup, out))
    assert str(err.value) == (
        f"{dup}: 3 rows repeat an id of an earlier row ('0' again at dup.jsonl line 5; "
        "'1' again at dup.jsonl line 6; '2' again at dup.jsonl line 7). Each document needs its "
        "own id: fix the ids, choose another --id-field, or pass --dedupe first to keep the "
        "first row of each id."
    )
    assert not out.exists()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.jsonl: no documents in the input"):
        extract(options(empty, out))
    assert not out.exists()

    # a folder holding results for another input: refused, nothing in it changes
    out.mkdir()
    (out / "parts").mkdir()
    first = _corpus(tmp_path / "first.jsonl", records[:4])
    manifest = options(first, out)
    manifest.validate()
    fingerprint = check_input(read_input(first)).fingerprint
    write_manifest(out, manifest.manifest(),
                    [{"path": str(first), "documents": 4, "fingerprint": fingerprint}])
    atomic_write_table(pa.table({"doc_id": ["0"]}), out / "parts" / "part-1.parquet")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = _corpus(tmp_path / "second.jsonl",
                     [{"id": i, "text": f"Another text {i}."} for i in range(4)])
    with pytest.raises(ValueError, match=r"holds results for another input: .*first.jsonl "
                                         r"\(4 documents.*second.jsonl has 4 documents"):
        extract(options(second, out))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_dedupe_first_bad_lines_and_append_through_ray(ray_cluster, scripted_pipeline_dir,
                                                        tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(
        b"".join(json.dumps({"id": i, "text": document_text(i)}).encode() + b"\n"
                 for i in range(5))
        + b'{"id": 2, "text": "a second row for id 2"}\n'
        + b'{"id": 9, "text": "caf\xe9"}\n'
        + b"not json\n"
    )
    out = tmp_path / "out"

    def options(path, **kwargs):
        return ExtractOptions(input=path, output=out, labels=LABELS, actors=1, batch_size=4,
                              pipeline=scripted_pipeline_dir, progress=False, **kwargs)

    summary = extract(options(corpus, dedupe="first"))
    status = assert_consistent(out)
    assert set(status) == {"0", "1", "2", "3", "4",
                           "<bad line>:corpus.jsonl line 7", "<bad line>:corpus.jsonl line 8"}
    assert status["<bad line>:corpus.jsonl line 8"]["error"] == (
        "corpus.jsonl line 8: not valid JSON (Expecting value at column 1)"
    )
    assert status["<bad line>:corpus.jsonl line 7"]["error"].startswith(
        "corpus.jsonl line 7: not UTF-8 text"
    )
    assert all(status[str(i)]["status"] == "ok" for i in range(5))
    assert [r["text"] for r in entity_rows(out) if r["doc_id"] == "2"] == [
        "Ada Lovelace", "London"]  # the first row of id 2
    assert summary["run"]["duplicate_ids"] == 1 and summary["run"]["processed"] == 7

    # another input with the same ids: refused; appended on request, new ids only
    more = _corpus(tmp_path / "more.jsonl",
                   [{"id": i, "text": document_text(100 + i)} for i in range(3, 7)])
    with pytest.raises(ValueError, match="holds results for another input"):
        extract(options(more))
    appended = extract(options(more, append=True))
    assert appended["run"]["processed"] == 2 and appended["run"]["appended"]
    assert set(assert_consistent(out)) >= {"5", "6"}
    manifest = json.loads((out / "extract.json").read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["corpus.jsonl", "more.jsonl"]
    # either input now resumes without --append
    assert extract(options(corpus, dedupe="first"))["run"]["processed"] == 0


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


def test_cli_refusals_exit_2_and_name_the_input(scripted_pipeline_dir, tmp_path):
    from typer.testing import CliRunner

    from ray_jobs.extract import app

    corpus = _corpus(tmp_path / "docs.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    out = tmp_path / "out"
    args = ["--input", str(corpus), "--output", str(out), "--labels", "person",
            "--pipeline", str(scripted_pipeline_dir), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: {corpus}: 1 rows repeat an id of an earlier row ('a' again at docs.jsonl " \
           "line 2)" in result.output
    assert "--dedupe first" in result.output and not out.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(app, ["--input", str(empty), *args[2:]])
    assert result.exit_code == 2 and "empty.jsonl: no documents in the input" in result.output
    assert not out.exists()
    help_text = CliRunner().invoke(app, ["--help"]).output
    assert "--dedupe" in help_text and "--append" in help_text and "--verbose" in help_text
