import json
import logging

import pytest

from spacy_uniner.passages import Chunker
from spacy_uniner.teacher.corpus import (
    CorpusReport,
    Document,
    load_student_tokenizer,
    read_documents,
    sample_passages,
)


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return load_student_tokenizer(str(smollm2_tokenizer_dir))


def read(paths, **kwargs):
    report = CorpusReport()
    documents = list(read_documents(paths, report, **kwargs))
    return documents, report


def test_bad_inputs_are_named_and_skipped(tmp_path, caplog):
    good = tmp_path / "good.txt"
    good.write_text("Ada Lovelace wrote the first program.", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9 au lait in M\xfcnchen.".encode("latin-1"))
    bad_lines = tmp_path / "lines.jsonl"
    bad_lines.write_bytes(
        b'{"text": "Grace Hopper built compilers."}\n'
        b"not json\n"
        b'{"body": "wrong field"}\n'
        b'{"text": "caf\xe9"}\n'
    )
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        documents, report = read([good, empty, binary, latin1, bad_lines, tmp_path / "missing.txt"])
    assert [d.text for d in documents] == [
        "Ada Lovelace wrote the first program.",
        "Grace Hopper built compilers.",
    ]
    text = "\n".join(report.messages)
    assert f"{empty}: empty file" in text
    assert f"{binary}: binary content" in text
    assert f"{latin1}: not UTF-8 text" in text
    assert f"{bad_lines} line 2: not valid JSON" in text
    assert f"{bad_lines} line 3: no text in field 'text'" in text
    assert f"{bad_lines} line 4: not UTF-8 text" in text
    assert "missing.txt: no such file" in text
    assert {str(empty), str(binary), str(latin1)} <= set(report.skipped_files)
    assert "empty file" in caplog.text  # also logged


def test_enormous_inputs(tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 50_000, encoding="utf-8")  # 250 kB
    documents, report = read([huge], max_file_bytes=100_000)
    assert documents == [] and f"{huge}: 250,000 bytes is over the limit" in report.messages[0]
    # Under the file limit, an enormous single document is read in pieces, not dropped.
    one_line = tmp_path / "line.jsonl"
    one_line.write_text(json.dumps({"text": "word " * 50_000}) + "\n", encoding="utf-8")
    documents, report = read([one_line], max_doc_chars=100_000)
    assert len(documents) == 3 and report.split_documents == 1
    assert sum(len(d.text) for d in documents) == 250_000


def test_folder_parquet_and_datasets(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First text.", encoding="utf-8")
    (folder / "sub" / "b.jsonl").write_text(json.dumps({"body": "Second text."}) + "\n", "utf-8")
    pq.write_table(pa.table({"body": ["Third text.", None]}), folder / "c.parquet")
    datasets.Dataset.from_dict({"body": ["Fourth text."]}).save_to_disk(str(folder / "ds"))
    (folder / "ignored.bin").write_bytes(b"\x00")
    documents, report = read([folder], text_field="body")
    texts = sorted(d.text for d in documents)
    # a.txt is a text file: its whole content is the document, whatever --text-field says.
    assert texts == ["First text.", "Fourth text.", "Second text.", "Third text."]
    assert any("c.parquet row 2: no text in field 'body'" in m for m in report.messages)
    assert report.files == 4


def test_a_text_file_is_read_in_blocks_of_paragraphs(tmp_path):
    paragraphs = [f"Paragraph {i} about Ada Lovelace." for i in range(40)]
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    documents, report = read([path], max_doc_chars=400)
    assert len(documents) > 3 and all(len(d.text) <= 400 for d in documents)
    assert [d.id for d in documents[:2]] == ["book.txt#0", "book.txt#1"]
    assert "\n\n".join(d.text for d in documents).split("\n\n") == paragraphs


def test_chunker_respects_limit_and_sentence_boundaries(tokenizer):
    chunker = Chunker(tokenizer, max_tokens=32)
    sentence_list = [f"Sentence number {i} talks about Ada Lovelace in London." for i in range(20)]
    assert len(chunker.chunk("d", " ".join(sentence_list))) > 1
    text = "\n".join(sentence_list)
    passages = chunker.chunk("d", text)
    for passage in passages:
        assert passage.n_tokens <= 32 and len(tokenizer(passage.text)["input_ids"]) <= 32
        assert passage.text.endswith(".")  # cut between sentences
        assert passage.text in text  # a verbatim slice of the document
    assert "\n".join(p.text for p in passages) == text


def test_chunker_cuts_an_overlong_sentence(tokenizer):
    chunker = Chunker(tokenizer, max_tokens=16)
    report = CorpusReport()
    text = " ".join(f"w{i}" for i in range(100))
    passages = sample_passages([Document("d", text)], chunker, None, 0, report)
    assert report.split_sentences == len(passages) - 1 > 0  # every cut is inside the sentence
    assert all(p.n_tokens <= 16 for p in passages) and all(p.text in text for p in passages)
    assert " ".join(p.text for p in passages).split() == text.split()  # nothing lost


def test_seeded_sample_is_reproducible_and_distinct(tokenizer):
    documents = [Document(f"d{i}", f"Text number {i}.") for i in range(50)]
    documents.append(Document("dup", "Text number 3."))
    chunker = Chunker(tokenizer)
    first = sample_passages(documents, chunker, 10, 7, CorpusReport())
    again = sample_passages(documents, chunker, 10, 7, CorpusReport())
    other = sample_passages(documents, chunker, 10, 8, CorpusReport())
    assert [p.id for p in first] == [p.id for p in again]
    assert [p.id for p in first] != [p.id for p in other]
    report = CorpusReport()
    everything = sample_passages(documents, chunker, None, 0, report)
    assert len(everything) == 50 and report.duplicate_passages == 1
