"""empty_bias calibration: one student run decides every bias, exactly as the student would."""

import json

import pytest
from typer.testing import CliRunner

from spacy_uniner import prompts
from spacy_uniner.evaluation.calibration import MarginReplay
from spacy_uniner.models.hf import HFStudent

TEXTS = ["Ada Lovelace met Charles Babbage in London in 1833.", "Short.", "Paris is big."]
LABELS = ["person", "date", "location", "x"]


@pytest.mark.parametrize("grounded", [False, True])
def test_margins_decide_every_bias(tiny_model_dir, grounded):
    ps = [prompts.render_query(t, label) for t in TEXTS for label in LABELS]
    settings = dict(max_new_tokens=6, threads=1, grounded=grounded)
    replay = MarginReplay(HFStudent(str(tiny_model_dir), **settings))
    replay.generate(ps)
    margins = sorted(m for _, m in replay.seen.values())
    assert len(margins) == len(ps)
    middle = (margins[len(margins) // 2 - 1] + margins[len(margins) // 2]) / 2
    for bias in (margins[0] - 1, middle, margins[-1] + 1):
        replay.bias = bias
        want = HFStudent(str(tiny_model_dir), empty_bias=bias, **settings).generate(ps)
        got = replay.generate(ps)
        assert [g.text for g in got] == [g.text for g in want], bias
    replay.bias = middle
    empties = sum(g.text == "[]" for g in replay.generate(ps))
    assert 0 < empties < len(ps)  # the middle bias splits the queries


def test_replay_needs_margins():
    with pytest.raises(TypeError, match="generate_with_margins"):
        MarginReplay(object())


def test_calibrate_cli_sweeps_once_and_records_the_best(
    tiny_model_dir, shared_data, slice_bio, tmp_path, monkeypatch
):
    from eval.calibrate import app

    calls = []
    original = HFStudent.generate_with_margins
    monkeypatch.setattr(HFStudent, "generate_with_margins",
                        lambda self, ps: calls.append(len(ps)) or original(self, ps))
    data = slice_bio(shared_data / "benchmarks/bio/crossner/conll2003/dev.txt", 12)
    settings = tmp_path / "uniner_student.json"
    settings.write_text(json.dumps({"note": "kept"}))
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(app, [
        "--model", str(tiny_model_dir), "--data", str(data), "--format", "bio",
        "--label-map", "conll2003", "--biases", "-20,0,3,20", "--threads", "1",
        "--write", str(settings), "--output", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    swept = json.loads(out.read_text())
    # every bias with each multi_label setting
    assert [(r["empty_bias"], r["multi_label"]) for r in swept["rows"]] == [
        (b, m) for b in (-20, 0, 3, 20) for m in (True, False)]
    assert sum(calls) == swept["queries"] > 0  # every query asked once, whatever the grid
    best = max(swept["rows"],
               key=lambda r: (r["strict_f"], -r["empty_bias"], r["multi_label"]))
    recorded = json.loads(settings.read_text())
    assert recorded["empty_bias"] == best["empty_bias"] and recorded["note"] == "kept"
    assert recorded["multi_label"] == best["multi_label"]
    # bias -20: every answer is "[]", nothing is found
    assert swept["rows"][0]["strict_f"] == 0.0
    # one type per span never predicts more spans than every type
    for every, one in zip(swept["rows"][::2], swept["rows"][1::2]):
        for name, per in every["per_set"].items():
            assert one["per_set"][name]["strict_p"] >= per["strict_p"] or per["strict_p"] == 0
    assert "best: empty_bias = " in result.output and "multi_label = " in result.output
    student = HFStudent(str(tiny_model_dir), adapter=str(tmp_path))
    assert student.empty_bias == best["empty_bias"]
    assert student.settings["multi_label"] == best["multi_label"]

    bad = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--dev", "--data", str(data)])
    assert bad.exit_code != 0 and "exactly one of --dev or --data" in bad.output


def test_calibrate_dev_wide_chooses_on_the_wide_sets_and_scores_the_plain_ones_free(
    tiny_model_dir, shared_data, tmp_path, monkeypatch
):
    from eval.calibrate import app

    asked = []
    original = HFStudent.generate_with_margins
    monkeypatch.setattr(HFStudent, "generate_with_margins",
                        lambda self, ps: asked.extend(ps) or original(self, ps))
    out = tmp_path / "wide.json"
    result = CliRunner().invoke(app, [
        "--model", str(tiny_model_dir), "--dev", "--wide", "--limit", "2",
        "--biases", "0,20", "--no-multi-label", "--threads", "1", "--max-new-tokens", "4",
        "--shared-data", str(shared_data), "--output", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    swept = json.loads(out.read_text())
    assert swept["averaged"] == ["pile-ner-dev", "conll2003-dev-wide", "bc5cdr-dev-wide"]
    row = swept["rows"][0]
    assert set(row["per_set"]) == {*swept["averaged"], "conll2003-dev", "bc5cdr-dev"}
    assert row["strict_f"] == pytest.approx(
        sum(row["per_set"][n]["strict_f"] for n in swept["averaged"]) / 3)
    # 2 passages x 5 types per wide set, the Pile passages' own types; the plain sets
    # ask nothing new
    assert swept["queries"] == 20 + row["per_set"]["pile-ner-dev"]["queries"]
    assert len(asked) == len(set(asked)) <= swept["queries"]
    assert "average of pile-ner-dev, conll2003-dev-wide, bc5cdr-dev-wide" in result.output

    bad = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--wide", "--data",
                                   str(out)])
    assert bad.exit_code != 0 and "give --dev too" in bad.output


def test_report_only_must_leave_something_to_choose_on():
    from spacy_uniner.evaluation.calibration import sweep_empty_bias

    with pytest.raises(ValueError, match="some, not all"):
        sweep_empty_bias(None, {"a": None}, [0.0], report_only=["a"])
    with pytest.raises(ValueError, match="some, not all"):
        sweep_empty_bias(None, {"a": None}, [0.0], report_only=["b"])
