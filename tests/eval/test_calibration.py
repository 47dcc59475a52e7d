"""empty_bias calibration: one student run decides every bias, exactly as the student would."""

import json
import math

import pytest
from typer.testing import CliRunner

from spacy_uniner import prompts
from spacy_uniner.evaluation.calibration import MarginReplay
from spacy_uniner.models.base import Generation
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
    sweep = ["--model", str(tiny_model_dir), "--data", str(data), "--format", "bio",
             "--label-map", "conll2003", "--biases", "-20,0,3,20", "--thresholds", "0,0.2,0.9",
             "--threads", "1", "--output", str(out), "--quiet"]
    result = CliRunner().invoke(app, sweep + ["--write", str(settings)])
    assert result.exit_code == 0, result.output
    swept = json.loads(out.read_text())
    # every bias with each multi_label setting and each threshold
    grid = [(b, m, t) for b in (-20, 0, 3, 20) for m in (True, False) for t in (0, 0.2, 0.9)]
    assert [(r["empty_bias"], r["multi_label"], r["threshold"]) for r in swept["rows"]] == grid
    assert sum(calls) == swept["queries"] > 0  # every query asked once, whatever the grid
    best = max(swept["rows"], key=lambda r: (r["strict_f"], -r["empty_bias"], r["multi_label"],
                                             -r["threshold"]))
    recorded = json.loads(settings.read_text())
    assert recorded["empty_bias"] == best["empty_bias"] and recorded["note"] == "kept"
    assert recorded["multi_label"] == best["multi_label"]
    assert recorded["threshold"] == best["threshold"]
    # bias -20: every answer is "[]", nothing is found
    assert swept["rows"][0]["strict_f"] == 0.0
    rows = {(r["empty_bias"], r["multi_label"], r["threshold"]): r["per_set"]
            for r in swept["rows"]}
    for b in (0, 3, 20):
        for name in rows[b, True, 0]:
            # one type per span never predicts more spans than every type
            every, one = rows[b, True, 0][name], rows[b, False, 0][name]
            assert one["strict_p"] >= every["strict_p"] or every["strict_p"] == 0
            # a higher threshold only takes spans away
            recalls = [rows[b, m, t][name]["strict_r"] for m in (True, False)
                       for t in (0, 0.2, 0.9)]
            assert recalls[0] >= recalls[1] >= recalls[2] and recalls[3] >= recalls[4] >= recalls[5]
    assert "best: empty_bias = " in result.output and "threshold = " in result.output
    student = HFStudent(str(tiny_model_dir), adapter=str(tmp_path))
    assert student.empty_bias == best["empty_bias"]
    assert student.settings["multi_label"] == best["multi_label"]
    assert student.settings["threshold"] == best["threshold"]

    # the replies were kept: a rerun asks nothing and scores the same; one cut short
    # (an interrupted run) asks only what is missing
    kept = tmp_path / "calibration.replies.jsonl"
    lines = kept.read_text().splitlines()
    assert len(lines) == 1 + swept["queries"] and swept["replies"] == str(kept)
    calls.clear()
    result = CliRunner().invoke(app, sweep)
    assert result.exit_code == 0, result.output
    assert calls == [] and json.loads(out.read_text())["rows"] == swept["rows"]
    kept.write_text("\n".join(lines[:6]) + "\n" + lines[6][:20])  # 5 replies and a torn line
    result = CliRunner().invoke(app, sweep)
    assert result.exit_code == 0, result.output
    assert sum(calls) == swept["queries"] - 5
    assert json.loads(out.read_text())["rows"] == swept["rows"]
    # replies of another student are not mixed in
    other = CliRunner().invoke(app, sweep + ["--max-new-tokens", "3"])
    said = "".join(other.output.replace("│", "").split())
    assert other.exit_code != 0 and "calibration.replies.jsonl" in said and "--overwrite" in said
    calls.clear()
    result = CliRunner().invoke(app, sweep + ["--max-new-tokens", "3", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sum(calls) == swept["queries"]

    bad = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--dev", "--data", str(data)])
    assert bad.exit_code != 0 and "exactly one of --dev or --data" in bad.output
    bad = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--data", str(data),
                                   "--thresholds", "0,1.5"])
    said = " ".join(bad.output.replace("│", " ").split())  # the error box wraps lines
    assert bad.exit_code != 0 and "between 0 and 1" in said and "got 1.5" in said


def test_calibrate_dev_wide_chooses_on_the_wide_sets_and_scores_the_plain_ones_free(
    tiny_model_dir, shared_data, tmp_path, monkeypatch
):
    from eval.calibrate import app

    asked = []
    original = HFStudent.generate_with_margins
    monkeypatch.setattr(HFStudent, "generate_with_margins",
                        lambda self, ps: asked.extend(ps) or original(self, ps))
    def sweep(name, biases, *flags):
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(app, [
            "--model", str(tiny_model_dir), "--dev", "--wide", *flags, "--limit", "2",
            "--biases", biases, "--no-multi-label", "--threads", "1", "--max-new-tokens", "4",
            "--shared-data", str(shared_data), "--output", str(out), "--quiet",
        ])
        assert result.exit_code == 0, result.output
        return result, json.loads(out.read_text())

    result, swept = sweep("wide", "0,20")
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
    # in lower case: the same sets and queries, each prompt's passage lowered
    asked.clear()
    _, lowered = sweep("lower", "0", "--lowercase")
    assert lowered["averaged"] == [f"{n}-lower" for n in swept["averaged"]]
    assert set(lowered["rows"][0]["per_set"]) == {f"{n}-lower" for n in row["per_set"]}
    assert lowered["queries"] == swept["queries"] == len(asked)
    assert all(prompts.passages_of([p])[0] == prompts.passages_of([p])[0].lower() for p in asked)
    # both cases: the choice averages the cased and lowered sets, each scored as alone
    _, mixed = sweep("both", "0", "--both-cases")
    assert mixed["averaged"] == swept["averaged"] + lowered["averaged"]
    assert mixed["queries"] == 2 * swept["queries"]
    first = mixed["rows"][0]
    for name in swept["averaged"]:
        assert first["per_set"][name] == row["per_set"][name]
    for name in lowered["averaged"]:
        assert first["per_set"][name] == lowered["rows"][0]["per_set"][name]
    assert first["strict_f"] == pytest.approx(
        (row["strict_f"] + lowered["rows"][0]["strict_f"]) / 2)
    clash = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--dev", "--lowercase",
                                     "--both-cases"])
    assert clash.exit_code != 0 and "not both" in clash.output

    bad = CliRunner().invoke(app, ["--model", str(tiny_model_dir), "--wide", "--data",
                                   str(tmp_path / "wide.json")])
    assert bad.exit_code != 0 and "give --dev too" in bad.output


def test_report_only_must_leave_something_to_choose_on():
    from spacy_uniner.evaluation.calibration import sweep_empty_bias

    with pytest.raises(ValueError, match="some, not all"):
        sweep_empty_bias(None, {"a": None}, [0.0], report_only=["a"])
    with pytest.raises(ValueError, match="some, not all"):
        sweep_empty_bias(None, {"a": None}, [0.0], report_only=["b"])


class SureAndUnsure:
    """Answers every query at bias 0 from a table, each mention with its own probability."""

    def __init__(self, answers):
        self.answers = answers  # label -> [(mention, probability)]

    def token_offsets(self, text):
        from spacy_uniner.passages import word_offsets

        return word_offsets(text)

    def generate_with_margins(self, ps):
        out = []
        for p in ps:
            items = self.answers.get(prompts.parse_query(p)[1], [])
            text = json.dumps([m for m, _ in items])
            offsets = tuple((text.index(f'"{m}"') + 1, text.index(f'"{m}"') + 1 + len(m))
                            for m, _ in items)
            logprobs = tuple(math.log(pr) for _, pr in items)
            out.append((Generation(text, offsets, logprobs), -1.0 if items else 1.0))
        return out


def test_a_threshold_is_chosen_where_it_drops_the_unsure_wrong_spans(tmp_path):
    import spacy

    from spacy_uniner.evaluation.benchmarks import load_benchmark
    from spacy_uniner.evaluation.calibration import sweep_empty_bias

    bio = tmp_path / "gold.txt"
    bio.write_text("Ada\tB-PER\nLovelace\tI-PER\nmet\tO\nBabbage\tB-PER\nin\tO\n"
                   "London\tB-LOC\n.\tO\n")
    bench = load_benchmark(bio, "bio", label_map={"PER": "person", "LOC": "location"})
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "store_replies": True,
        "model": {"@uniner_models": "test.ScriptedStudent.v1", "replies": {}}})
    # right and sure; wrong and unsure (London as a person); right but unsure (Babbage)
    nlp.get_pipe("universal_ner").model = SureAndUnsure({
        "person": [("Ada Lovelace", 0.9), ("London", 0.2), ("Babbage", 0.45)],
        "location": [("London", 0.95)]})
    swept = sweep_empty_bias(nlp, {"gold": bench}, [0.0], thresholds=[0.6, 0.0, 0.3])
    by = {r["threshold"]: r["per_set"]["gold"] for r in swept["rows"]}
    assert sorted(by) == [0.0, 0.3, 0.6]  # each threshold once, in order
    assert (by[0.0]["strict_p"], by[0.0]["strict_r"]) == (pytest.approx(3 / 4), 1.0)
    assert (by[0.3]["strict_p"], by[0.3]["strict_r"]) == (1.0, 1.0)
    assert (by[0.6]["strict_p"], by[0.6]["strict_r"]) == (1.0, pytest.approx(2 / 3))
    assert swept["best"]["threshold"] == 0.3
    pipe = nlp.get_pipe("universal_ner")
    assert pipe.threshold is None and isinstance(pipe.model, SureAndUnsure)  # put back
    with pytest.raises(ValueError, match="between 0 and 1"):
        sweep_empty_bias(nlp, {"gold": bench}, [0.0], thresholds=[2])
