"""The one document reader of ray_jobs.annotate and ray_jobs.extract (spacy_uniner.documents).

Extraction's strict reading is tested with the job (tests/distributed/test_extraction.py),
the teacher's lenient reading with the corpus (tests/teacher/test_corpus.py)."""

import json

import pytest

from spacy_uniner.documents import InputFileError, read_input


def test_a_datasets_folder_is_an_input_like_any_other(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"id": ["a", "b"], "body": ["One.", None]}),
         "test": datasets.Dataset.from_dict({"id": ["c"], "body": ["Three."]})}
    ).save_to_disk(str(tmp_path / "ds"))
    source = read_input(tmp_path / "ds", text_field="body")
    assert (source.kind, source.id_field) == ("datasets", "id")
    rows = [(r.doc_id, r.text, r.error, r.where) for r in source.rows()]
    assert sorted(rows) == [
        ("a", "One.", None, "ds/train row 1"),
        ("b", None, "no text in field 'body'", "ds/train row 2"),
        ("c", "Three.", None, "ds/test row 1"),
    ]
    with pytest.raises(ValueError, match=r"ds: no field 'text' \(fields: "):
        read_input(tmp_path / "ds")


def test_one_walk_for_both_jobs(tmp_path):
    folder = tmp_path / "corpus"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "notes.txt").write_text("hidden")
    (folder / "b.md").write_text("Second.")
    (folder / "a.txt").write_text("First.")
    (folder / "c.jsonl").write_text(json.dumps({"text": "Third."}) + "\n")
    # extract: one kind of input per folder, checked before anything is read
    with pytest.raises(ValueError, match="one kind of input.*found jsonl, txt"):
        read_input(folder)
    # annotate: any mix, files in path order, hidden ones left out
    source = read_input(folder, strict=False)
    assert [source.name(f) for f in source.files] == ["a.txt", "b.md", "c.jsonl"]
    assert [r.text for r in source.rows()] == ["First.", "Second.", "Third."]


def test_a_file_that_cannot_be_read_names_itself(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    source = read_input(tmp_path, strict=False)
    with pytest.raises(InputFileError, match=r"bad\.parquet: could not read it as parquet"):
        list(source.rows())
