import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from spacy_uniner.cli import app

runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
pytestmark = pytest.mark.usefixtures("cli_logging_restored")  # the CLI runs in this process


@pytest.fixture
def texts(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("Ada Lovelace met Charles Babbage in London.", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("Grace Hopper wrote COBOL. 東京", encoding="utf-8")
    return a, b


def extract(*args, input=None):
    return runner.invoke(app, ["extract", *args], input=input)


def test_jsonl_output_and_html(tiny_model_dir, texts, tmp_path):
    html = tmp_path / "out.html"
    result = extract("--labels", "person, location", "--model", str(tiny_model_dir),
                     "--max-new-tokens", "4", "--format", "jsonl", "--html", str(html),
                     str(texts[0]), str(texts[1]))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["source"] for r in lines] == [str(texts[0]), str(texts[1])]
    assert lines[1]["text"].endswith("東京")
    for record in lines:
        assert set(record) == {"source", "text", "spans", "ents"}
    page = html.read_text()
    assert "<html" in page.lower() and "Grace Hopper" in page
    assert "4 queries" in result.stderr


def test_stdin_and_table(tiny_model_dir):
    result = extract("-l", "person", "--model", str(tiny_model_dir), "--max-new-tokens", "2",
                     "-", input="Ada Lovelace met Babbage.")
    assert result.exit_code == 0, result.output
    assert "-" in result.stdout  # the table is titled with its source
    assert "1 document(s)" in result.stderr


@pytest.mark.parametrize("labels", [",", " , "])
def test_no_usable_labels(labels, texts):
    result = extract("--labels", labels, str(texts[0]))
    assert result.exit_code == 2
    assert "at least one label" in result.output


def test_missing_labels_option(texts):
    result = extract(str(texts[0]))
    assert result.exit_code == 2 and "--labels" in result.output


def test_missing_and_non_utf8_files(tmp_path):
    result = extract("-l", "person", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2 and "nope.txt: no such file" in result.output
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    result = extract("-l", "person", str(bad))
    assert result.exit_code == 2 and "latin1.txt: not UTF-8" in result.output


def test_help_lists_options():
    result = runner.invoke(app, ["extract", "--help"])
    assert result.exit_code == 0
    for option in ("--labels", "--model", "--format", "--html"):
        assert option in result.stdout


def test_adapter_must_be_a_folder(texts, tmp_path):
    result = extract("-l", "person", "--adapter", str(tmp_path / "missing"), str(texts[0]))
    assert result.exit_code == 2 and "--adapter" in result.output


@pytest.mark.parametrize("option", ["--batch-size", "--threads", "--max-new-tokens"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one_are_refused_naming_the_value(option, value, texts):
    result = extract("-l", "person", option, value, str(texts[0]))
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': must be at least 1, got {value}" in result.output


def test_html_path_is_checked_before_any_work(texts, tmp_path):
    # a model that does not exist: had the extraction started, it would fail on that instead
    args = ["-l", "person", "--model", str(tmp_path / "no-model"), str(texts[0])]
    missing = tmp_path / "no-such-folder" / "out.html"
    result = extract("--html", str(missing), *args)
    assert result.exit_code == 2, result.output
    assert f"{missing}: the folder {missing.parent} does not exist; create it first" in (
        result.output
    )
    result = extract("--html", str(tmp_path), *args)
    assert result.exit_code == 2 and "a folder; give a file name" in result.output


def test_a_folder_argument_says_it_is_a_folder(tmp_path):
    result = extract("-l", "person", str(tmp_path))
    assert result.exit_code == 2
    assert "a folder, not a file; give the files in it" in result.output
    assert "no such file" not in result.output


def test_a_default_run_prints_only_our_results_and_summary(tiny_model_dir, texts):
    """No transformers load bar, no library FutureWarning: one summary line on stderr."""
    command = [sys.executable, "-m", "spacy_uniner.cli", "extract", "-l", "person",
               "--model", str(tiny_model_dir), "--max-new-tokens", "2", "--format", "jsonl",
               str(texts[0])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("1 document(s), "), result.stderr


def test_a_student_that_cannot_be_loaded_is_an_error_naming_it(tiny_model_dir, texts, tmp_path):
    missing = tmp_path / "no-model"
    result = extract("-l", "person", "--model", str(missing), str(texts[0]))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--model'" in result.output
    assert str(missing) in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    result = extract("-l", "person", "--model", str(tiny_model_dir), "--adapter", str(empty),
                     str(texts[0]))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--model' / '--adapter'" in result.output
    assert f"Could not load student adapter {empty}" in result.output


def test_an_uncached_hub_id_names_the_option_that_fetches_it(texts):
    # The suite runs with HF_HUB_OFFLINE=1 (conftest): a fetch itself must fail.
    hub_id = "spacy-uniner-tests/no-such-student"
    result = extract("-l", "person", "--model", hub_id, str(texts[0]))
    assert result.exit_code == 2, result.output
    assert hub_id in result.output and "--allow-download" in result.output
    # With the option the source check lets it through to transformers, whose
    # failure to fetch (offline) is still a usage error, not a traceback.
    result = extract("-l", "person", "--model", hub_id, "--allow-download", str(texts[0]))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--model'" in result.output
    assert "downloads are off" not in result.output and "Traceback" not in result.output
