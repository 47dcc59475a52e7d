"""``python -m eval.benchmark`` end to end: tiny model, scripted doubles, resume."""

import json
import logging

import pytest
import spacy
from spacy.training import Example
from typer.testing import CliRunner

from eval.benchmark import app
from spacy_uniner.evaluation.benchmarks import (
    PAPER_PARTIAL,
    PAPER_ZERO_SHOT,
    ZERO_SHOT,
    load_uniner_json,
)
from spacy_uniner.evaluation.runner import markdown_table

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_tiny_model_end_to_end_counts_parse_failures(ai_slice, tiny_model_dir, tmp_path):
    out = tmp_path / "tiny"
    result = _run("--model", tiny_model_dir, "--data", ai_slice, "--format", "uniner",
                  "--limit", 1, "--max-new-tokens", 8, "--threads", 1, "--output", out, "--quiet")
    assert result.exit_code == 0, result.output
    m = _metrics(out)
    ds = m["datasets"]["ai_slice"]
    assert ds["counts"]["passages"] == 1 and ds["counts"]["passages_in_file"] == 4
    assert ds["counts"]["queries"] == 13 and ds["counts"]["windows"] == 1
    # Random weights answer garbage: most replies hold no list; every one is counted.
    assert ds["counts"]["parse_failures"] >= 1
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 13
    first = json.loads(lines[0])
    assert set(first) >= {"dataset", "passage_id", "type", "reply", "mentions", "error", "gold"}
    failures = sum(json.loads(line)["error"] is not None for line in lines)
    assert failures == ds["counts"]["parse_failures"]
    assert m["run"]["model"]["max_new_tokens"] == 8
    table = (out / "results.md").read_text()
    assert "UniNER string F1" in table and "(paper)" not in table
    assert (out / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_scores_one_on_a_real_slice(ai_slice, tmp_path):
    cfg = _write_json(tmp_path / "oracle.json",
                      {"@uniner_models": "test.OracleStudent.v1", "gold_file": str(ai_slice)})
    out = tmp_path / "oracle"
    result = _run("--model-config", cfg, "--data", ai_slice, "--output", out, "--quiet")
    assert result.exit_code == 0, result.output
    ds = _metrics(out)["datasets"]["ai_slice"]
    assert ds["counts"]["gold_spans"] > 0
    for metric in ("strict", "partial", "uniner"):
        assert ds[metric]["f"] == pytest.approx(1.0), metric
    assert ds["uniner"]["reference"]["f1"] == pytest.approx(1.0, abs=1e-9)
    assert ds["counts"]["parse_failures"] == 0
    assert ds["errors"]["predicted"]["exact"] == ds["counts"]["predicted_spans"] > 0
    assert sum(ds["errors"]["gold"].values()) == ds["errors"]["gold"]["exact"]


def test_runner_numbers_equal_nlp_evaluate(tmp_path, ai_slice):
    """The scripted double: the runner's scores equal the scorer's through nlp.evaluate."""
    replies = {"algorithm": '["naive Bayes classifier", "Gaussian mixture model s", "SVM"]',
               "field": 'Sure! ["machine learning"]', "person": '["Typical"]'}
    cfg = _write_json(tmp_path / "scripted.json",
                      {"@uniner_models": "test.ScriptedStudent.v1", "replies": replies})
    out = tmp_path / "scripted"
    result = _run("--model-config", cfg, "--data", ai_slice, "--output", out, "--quiet")
    assert result.exit_code == 0, result.output
    ds = _metrics(out)["datasets"]["ai_slice"]

    bench = load_uniner_json(ai_slice)
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "model": {"@uniner_models": "test.ScriptedStudent.v1", "replies": replies},
        "labels": bench.labels, "store_replies": True,
        "scorer": {"@scorers": "spacy_uniner.scorer.v2"}})
    examples = [Example(bench.predicted_doc(p, nlp.vocab), bench.reference_doc(p, nlp.vocab))
                for p in bench.passages]
    scores = nlp.evaluate(examples)
    assert ds["strict"]["f"] == pytest.approx(scores["spans_universal_ner_f"])
    assert ds["partial"]["f"] == pytest.approx(scores["spans_universal_ner_partial_f"])
    assert ds["uniner"]["f"] == pytest.approx(scores["spans_universal_ner_uniner_f"])
    # Hand check on passage 0 ("... naive Bayes classifier s , Gaussian mixture model s ..."):
    # "Gaussian mixture model s" overlaps gold "Gaussian mixture model" -> partial > strict.
    assert ds["partial"]["f"] > ds["strict"]["f"] > 0
    # the per-passage strict counts (for bootstrap intervals) give the same micro F1
    tp, pred, gold = (sum(c[k] for c in ds["strict_counts"]) for k in range(3))
    assert len(ds["strict_counts"]) == len(bench.passages)
    assert 2 * tp / (pred + gold) == pytest.approx(ds["strict"]["f"])
    # the error kinds account for every predicted and every gold span
    errors = ds["errors"]
    assert errors["predicted"]["exact"] == errors["gold"]["exact"] == tp
    assert sum(errors["predicted"].values()) == pred and sum(errors["gold"].values()) == gold
    assert errors["predicted"]["boundary"] >= 1  # "Gaussian mixture model s"
    assert errors["gold"]["none"] >= 1  # types the double never answers: their gold is missed
    assert "Where the strict errors come from" in (out / "results.md").read_text()
    low, high = _metrics(out)["averages"]["overall"]["strict_ci95"]
    assert low < ds["strict"]["f"] < high
    assert "95% bootstrap interval" in (out / "results.md").read_text()
    # "Sure! [...]" is read by our parser but is empty for UniNER's metric.
    assert ds["counts"]["parse_failures"] == 0
    field_preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
                   if json.loads(line)["type"] == "field"]
    assert all(p["mentions"] == ["machine learning"] for p in field_preds)


def test_suite_with_scripted_double_writes_paper_rows(tmp_path):
    cfg = _write_json(tmp_path / "s.json", {"@uniner_models": "test.ScriptedStudent.v1",
                                            "replies": {"genre": '["comedies"]'}})
    out = tmp_path / "suite"
    result = _run("--model-config", cfg, "--suite", "zero-shot", "--limit", 1, "--output", out,
                  "--quiet")
    assert result.exit_code == 0, result.output
    m = _metrics(out)
    assert list(m["datasets"]) == list(ZERO_SHOT)
    assert m["averages"]["overall"]["datasets"] == 7
    assert m["averages"]["CrossNER"]["datasets"] == 5 and m["averages"]["MIT"]["datasets"] == 2
    table = (out / "results.md").read_text()
    assert "| ChatGPT (paper) | 5.3 | 32.8 | 52.4 | 39.8 | 66.6 | 68.5 | 67.0 | 47.5 |" in table
    assert "UniNER-13B (paper)" in table and "sample of 1 passages" in table


def test_resume_after_interruption(ai_slice, tmp_path, monkeypatch, caplog, oracle):
    cfg = _write_json(tmp_path / "oracle.json",
                      {"@uniner_models": "test.OracleStudent.v1", "gold_file": str(ai_slice)})
    args = ["--model-config", cfg, "--data", ai_slice, "--passages-per-batch", 1, "--quiet"]
    clean = tmp_path / "clean"
    assert _run(*args, "--output", clean).exit_code == 0
    assert oracle.calls_total == 4  # one generate call per passage batch

    out = tmp_path / "resumed"
    oracle.calls_total = 0
    monkeypatch.setenv("ORACLE_FAIL_AFTER", "2")
    result = _run(*args, "--output", out)
    assert result.exit_code != 0 and not (out / "metrics.json").exists()
    cache = out / "cache" / "ai_slice.jsonl"
    assert len(cache.read_text().splitlines()) == 1 + 2  # header + two finished passages

    with cache.open("a") as fh:  # a line torn by the interruption
        fh.write('{"passage_id": "CrossNER_AI_1')
    monkeypatch.delenv("ORACLE_FAIL_AFTER")
    oracle.calls_total = 0
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        result = _run(*args, "--output", out)
    assert result.exit_code == 0, result.output
    assert "unreadable line" in caplog.text
    assert oracle.calls_total == 2  # only the two missing passages were asked
    resumed, full = _metrics(out)["datasets"]["ai_slice"], _metrics(clean)["datasets"]["ai_slice"]
    assert resumed["counts"]["passages_from_cache"] == 2
    for metric in ("strict", "partial", "uniner"):
        assert resumed[metric] == full[metric]
    assert (out / "predictions.jsonl").read_text() == (clean / "predictions.jsonl").read_text()


def test_cache_of_another_model_is_refused(ai_slice, tmp_path):
    out = tmp_path / "o"
    first = _write_json(tmp_path / "a.json", {"@uniner_models": "test.ScriptedStudent.v1",
                                              "replies": {}})
    second = _write_json(tmp_path / "b.json", {"@uniner_models": "test.ScriptedStudent.v1",
                                               "replies": {"person": '["x"]'}})
    result = _run("--model-config", first, "--data", ai_slice, "--output", out, "--quiet")
    assert result.exit_code == 0
    before = (out / "predictions.jsonl").read_text()
    result = _run("--model-config", second, "--data", ai_slice, "--output", out, "--quiet")
    assert result.exit_code == 2
    squeezed = "".join(result.output.replace("│", "").split())  # the error box, unwrapped
    assert "ai_slice.jsonlwaswrittenforadifferentmodel" in squeezed
    assert "--overwrite" in squeezed
    # the refused run leaves the finished run's predictions as they were
    assert (out / "predictions.jsonl").read_text() == before
    assert not (out / "predictions.jsonl.partial").exists()
    ok = _run("--model-config", second, "--data", ai_slice, "--output", out, "--quiet",
              "--overwrite")
    assert ok.exit_code == 0, ok.output


def test_bad_option_combinations(ai_slice):
    assert _run("--suite", "zero-shot", "--data", ai_slice).exit_code != 0
    assert _run("--data", ai_slice, "--label-map", "mit_movie").exit_code != 0


def test_bad_benchmark_files_exit_2_naming_the_file(tmp_path):
    def message(result):  # the error box's text, unwrapped
        assert result.exit_code == 2, result.output
        return " ".join(result.output.replace("│", " ").split())

    conll = tmp_path / "conll.txt"
    conll.write_text("Peter\tB-PER\nin\tO\nLondon\tB-LOC\n")
    text = message(_run("--data", conll, "--format", "bio", "--output", tmp_path / "out"))
    assert "conll.txt: the tags LOC, PER are dataset codes" in text
    assert "--label-map conll2003" in text
    cut = tmp_path / "cut.json"
    cut.write_text('[{"id": "a", "conversations": [')
    text = message(_run("--data", cut, "--output", tmp_path / "out"))
    assert "cut.json: not valid JSON" in text and "at line 1, column 32" in text
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_paper_rows_are_consistent_with_their_averages():
    for table in (PAPER_ZERO_SHOT, PAPER_PARTIAL):
        for model, row in table.items():
            mean = sum(row[c] for c in ZERO_SHOT) / len(ZERO_SHOT)
            assert abs(mean - row["Avg"]) < 0.051, model


def test_markdown_table_without_suite_columns_has_no_paper_rows():
    scores = {m: {"f": 0.5} for m in ("strict", "partial", "uniner")}
    table = markdown_table({"my-data": scores}, title="x")
    assert "(paper)" not in table and "| x: strict span F1 | 50.0 | 50.0 |" in table


def test_suite_subset_with_only(tmp_path):
    cfg = _write_json(tmp_path / "s.json", {"@uniner_models": "test.ScriptedStudent.v1",
                                            "replies": {}})
    out = tmp_path / "only"
    result = _run("--model-config", cfg, "--suite", "zero-shot", "--only", "Science,Movie",
                  "--limit", 1, "--output", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert list(_metrics(out)["datasets"]) == ["Movie", "Science"]
    # the paper's average over the chosen columns: ChatGPT (5.3 + 67.0) / 2
    assert "| ChatGPT (paper) | 5.3 | 67.0 | 36.1 |" in (out / "results.md").read_text()
    bad = _run("--model-config", cfg, "--suite", "zero-shot", "--only", "Biology",
               "--output", out, "--quiet")
    assert bad.exit_code != 0


def test_bootstrap_interval():
    from spacy_uniner.evaluation.runner import bootstrap_interval

    perfect = [[1, 1, 1]] * 20
    assert bootstrap_interval([perfect, perfect]) == [1.0, 1.0]
    half = [[1, 1, 1]] * 10 + [[0, 1, 1]] * 10  # F1 0.5 in each
    low, high = bootstrap_interval([half])
    assert 0.25 < low < 0.5 < high < 0.75
    # more passages: a narrower interval; the average of two sets is averaged
    low2, high2 = bootstrap_interval([half * 10])
    assert high2 - low2 < high - low
    low3, high3 = bootstrap_interval([perfect * 10, half * 10])
    assert low3 < 0.75 < high3
    assert bootstrap_interval([perfect, None]) is None and bootstrap_interval([]) is None


def test_cache_of_another_recorded_student_setting_is_refused(ai_slice, tmp_path):
    """What an adapter records beside itself (empty_bias, multi_label) changes the
    predictions, so a cache written under other recorded settings is not reused."""
    from spacy_uniner.evaluation.benchmarks import load_benchmark
    from spacy_uniner.evaluation.runner import run_benchmark

    bench = load_benchmark(str(ai_slice), "uniner")
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={"store_replies": True, "model": {
        "@uniner_models": "test.ScriptedStudent.v1", "replies": {}}})
    cache = tmp_path / "cache.jsonl"
    run_benchmark(nlp, bench, cache, model_config={"name": "scripted"})
    nlp.get_pipe("universal_ner").model.settings = {"multi_label": False}
    with pytest.raises(ValueError, match="different model"):
        run_benchmark(nlp, bench, cache, model_config={"name": "scripted"})
    run_benchmark(nlp, bench, cache, model_config={"name": "scripted"}, overwrite=True)


def test_a_missing_student_is_an_error_naming_it(ai_slice, tmp_path):
    from eval.calibrate import app as calibrate

    missing = tmp_path / "no-model"
    args = ["--model", missing, "--data", ai_slice, "--format", "uniner",
            "--output", tmp_path / "out", "--quiet"]
    wide = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})  # no wrapped message
    for app_ in (app, calibrate):
        result = wide.invoke(app_, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert "--model" in result.output and f"{missing}' does not exist" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
