import hashlib
import json

import pytest

from spacy_uniner.training.data import build_conversations, conversations_to_dataset, read_pile_ner
from spacy_uniner.training.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data):
    passages = read_pile_ner(shared_data / "pile-ner" / "pile_ner_type_subset.jsonl")[:24]
    convs, stats = build_conversations(passages, seed=0)
    path = tmp_path_factory.mktemp("instruct")
    conversations_to_dataset(convs).save_to_disk(str(path))
    (path / "stats.json").write_text(json.dumps({"conversations": stats.conversations}))
    return path


def config(data_dir, output, tiny_model_dir, **kw):
    base = dict(data=str(data_dir), output=str(output), base_model=str(tiny_model_dir),
                max_steps=2, batch_size=2, grad_accum=1, max_length=384, save_steps=1,
                threads=1, bf16="false")
    base.update(kw)
    return FinetuneConfig(**base)


def test_lora_run_saves_adapter_config_and_metrics(data_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    metrics = finetune(config(data_dir, out, tiny_model_dir))
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)  # as given
    record = json.loads((out / "uniner_training.json").read_text())
    assert record["config"]["max_steps"] == 2 and record["data_stats"] == {"conversations": 24}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # a finished run is skipped ...
    assert finetune(config(data_dir, out, tiny_model_dir, max_steps=5))["steps"] == 2
    # ... and the adapter loads into the component's backend
    from spacy_uniner.models.hf import HFStudent
    from spacy_uniner import prompts

    student = HFStudent(str(tiny_model_dir), adapter=str(out / "adapter"), max_new_tokens=3)
    assert len(student.generate([prompts.render_query("Paris.", "city")])) == 1


def test_interrupted_run_resumes_from_checkpoint(data_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    finetune(config(data_dir, out, tiny_model_dir, max_steps=2))
    (out / "metrics.json").unlink()  # as if the process died after its checkpoints
    metrics = finetune(config(data_dir, out, tiny_model_dir, max_steps=3))
    assert metrics["resumed_from"].endswith("checkpoint-2")
    assert metrics["steps"] == 3


def test_run_can_start_from_a_trained_adapter(data_dir, tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    first = tmp_path / "first"
    finetune(config(data_dir, first, tiny_model_dir, learning_rate=1e-2))
    trained = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    # a fresh LoRA adapter starts with B = 0: the trained one has moved away from it
    assert any(t.abs().sum() > 0 for name, t in trained.items() if "lora_B" in name)
    # with learning rate 0 the second run saves exactly the adapter it started from
    second = tmp_path / "second"
    metrics = finetune(config(data_dir, second, tiny_model_dir, learning_rate=0.0, lora_r=4,
                              init_adapter=str(first / "adapter")))
    assert metrics["steps"] == 2
    again = load_file(str(second / "adapter" / "adapter_model.safetensors"))
    assert set(again) == set(trained)
    assert all(again[name].equal(trained[name]) for name in trained)
    # its own rank is kept (lora_r=4 does not apply)
    rank = json.loads((first / "adapter" / "adapter_config.json").read_text())["r"]
    assert json.loads((second / "adapter" / "adapter_config.json").read_text())["r"] == rank != 4
    record = json.loads((second / "uniner_training.json").read_text())
    assert record["config"]["init_adapter"] == str(first / "adapter")
    # the record names the rank trained and the adapter started from, by content
    assert record["config"]["lora_r"] == rank
    start = first / "adapter" / "adapter_model.safetensors"
    assert record["init_adapter"] == {"path": str(first / "adapter"),
                                      "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    assert json.loads((first / "uniner_training.json").read_text())["init_adapter"] is None


def test_start_adapter_errors_name_the_problem(data_dir, tmp_path, tiny_model_dir):
    first = tmp_path / "first"
    finetune(config(data_dir, first, tiny_model_dir))
    adapter = str(first / "adapter")
    with pytest.raises(ValueError, match="cannot start a full fine-tune"):
        finetune(config(data_dir, tmp_path / "a", tiny_model_dir, lora=False, init_adapter=adapter))
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        finetune(config(data_dir, tmp_path / "b", tiny_model_dir, init_adapter=str(tmp_path)))
    other = tmp_path / "other-base"
    other.mkdir()
    with pytest.raises(ValueError, match=r"was trained on base .* give --base-model"):
        finetune(config(data_dir, tmp_path / "c", other, init_adapter=adapter))


def test_full_finetune(data_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "full"
    metrics = finetune(config(data_dir, out, tiny_model_dir, lora=False, max_steps=1, packing=True))
    assert metrics["lora"] is False and (out / "model" / "config.json").exists()


def test_missing_data_or_base_model_is_a_clear_error_before_anything_loads(
    data_dir, tmp_path, tiny_model_dir
):
    with pytest.raises(FileNotFoundError, match="train.build_data"):
        finetune(config(tmp_path / "nothing", tmp_path / "out", tiny_model_dir))
    missing = tmp_path / "no-base"
    with pytest.raises(FileNotFoundError, match=f"base model: .*'{missing}' does not exist"):
        finetune(config(data_dir, tmp_path / "out", missing))
    with pytest.raises(FileNotFoundError, match="base model: .*no config.json"):
        finetune(config(data_dir, tmp_path / "out", tmp_path))
    assert not (tmp_path / "out").exists()


def test_ray_train_with_two_cpu_workers(ray_cluster, data_dir, tmp_path, tiny_model_dir):
    # on the session's local Ray (tests/conftest.py), which finetune joins
    out = tmp_path / "ray-run"
    metrics = finetune(config(data_dir, out, tiny_model_dir, save_steps=10, workers=2))
    assert metrics["workers"] == 2 and metrics["steps"] == 2
    assert (out / "adapter" / "adapter_config.json").exists()


def test_ship_copies_adapter_and_writes_model_card(data_dir, tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from train.ship import app

    run = tmp_path / "run"
    finetune(config(data_dir, run, tiny_model_dir, max_steps=1))
    dest = tmp_path / "shipped"
    result = CliRunner().invoke(app, ["--run", str(run), "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = (dest / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "1 steps" in card
    assert "Trained on 2 CPU cores in " in card and "in sittings" not in card
    assert "continued a trained adapter" not in card
    # a run that continued another adapter names it
    record_path = run / "uniner_training.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "init_adapter": {
        "path": "/runs/run-e3/adapter", "sha256": "ab" * 32}}))
    result = CliRunner().invoke(app, ["--run", str(run), "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert ("continued a trained adapter (adapter, adapter_model sha256 abababababab)"
            in (dest / "README.md").read_text())
    record_path.write_text(json.dumps(record))
    # a resumed run's wall time and loss cover its last sitting only: the card says so
    metrics = json.loads((run / "metrics.json").read_text())
    resumed = {**metrics, "resumed_from": str(run / "checkpoints" / "checkpoint-240")}
    (run / "metrics.json").write_text(json.dumps(resumed))
    result = CliRunner().invoke(app, ["--run", str(run), "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert ("in sittings; the last, resumed from checkpoint-240, took "
            in (dest / "README.md").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics))
    # with the dev suite's metrics, a calibration and its recorded bias
    dev = tmp_path / "dev"
    dev.mkdir()
    one = {"strict": {"f": 0.5}, "partial": {"f": 0.6}, "uniner": {"f": 0.4},
           "counts": {"passages": 131}}
    (dev / "metrics.json").write_text(json.dumps({
        "run": {"seed": 0}, "datasets": {"pile-ner-dev": one},
        "averages": {"overall": {"strict": 0.5, "partial": 0.6, "uniner": 0.4}}}))
    swept = tmp_path / "calibration.json"
    rows = [{"empty_bias": 0.0, "strict_f": 0.4}, {"empty_bias": 1.5, "strict_f": 0.5}]
    swept.write_text(json.dumps({"rows": rows, "best": rows[1], "passages": 131, "queries": 199}))
    (run / "adapter" / "uniner_student.json").write_text(json.dumps({"empty_bias": 1.5}))

    def ship_card(*args) -> str:
        result = CliRunner().invoke(app, ["--run", str(run), "--dest", str(dest), *map(str, args)])
        assert result.exit_code == 0, result.output
        return (dest / "README.md").read_text()

    card = ship_card("--dev-eval", dev, "--calibration", swept)
    assert json.loads((dest / "uniner_student.json").read_text()) == {"empty_bias": 1.5}
    assert "| distilled: strict span F1 | 50.0 | 50.0 |" in card
    assert "pile-ner-dev 131" in card
    assert "`empty_bias` = 1.5" in card
    assert "among biases 0, 1.5: 50.0 (bias 0, every type kept: 40.0)" in card
    # a sweep with multi_label: the pair chosen, and a table of both settings
    grid = [{"empty_bias": b, "multi_label": m, "strict_f": f}
            for b, m, f in ((0.0, True, 0.4), (0.0, False, 0.45), (1.5, True, 0.5),
                            (1.5, False, 0.55))]
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"rows": grid, "best": grid[3], "passages": 131, "queries": 199}))
    card = ship_card("--dev-eval", dev, "--calibration", both)
    assert "`empty_bias` = 1.5 and `multi_label` = false" in card
    assert "| every type per span | 40.0 | 50.0 |" in card
    assert "| best type per span | 45.0 | 55.0 |" in card
    # with thresholds too: all three named, the table at the chosen threshold, and the
    # chosen bias's row by threshold
    grid = [{"empty_bias": b, "multi_label": m, "threshold": t, "strict_f": f + t / 10}
            for b, m, f in ((0.0, True, 0.4), (0.0, False, 0.45), (1.5, True, 0.5),
                            (1.5, False, 0.55)) for t in (0.0, 0.5)]
    both.write_text(json.dumps({"rows": grid, "best": grid[7], "passages": 131, "queries": 199}))
    card = ship_card("--dev-eval", dev, "--calibration", both)
    assert "`empty_bias` = 1.5, `multi_label` = false and `threshold` = 0.5" in card
    assert "and span-score thresholds 0, 0.5: 60.0" in card
    assert "| every type per span | 45.0 | 55.0 |" in card
    assert "by threshold: 0: 55.0, 0.5: 60.0." in card

    # without an evaluate-dev run, the dev table is the calibration's chosen row
    rows[1]["per_set"] = {"conll2003-dev": {"strict_f": 0.5, "partial_f": 0.6, "uniner_f": 0.4,
                                            "passages": 200}}
    rows[1].update(partial_f=0.6, uniner_f=0.4)
    swept.write_text(json.dumps({"rows": rows, "best": rows[1], "passages": 200, "queries": 600}))
    card = ship_card("--calibration", swept)
    assert "at the calibrated empty_bias 1.5; passages per set: conll2003-dev 200." in card
    assert "| distilled: partial-match F1 | 60.0 | 60.0 |" in card
    # a wide-condition sweep: the average is over the wide sets, the plain ones beside
    rows[1]["per_set"]["conll2003-dev-wide"] = {**rows[1]["per_set"]["conll2003-dev"],
                                                "strict_f": 0.45}
    rows[1]["strict_f"] = 0.45
    swept.write_text(json.dumps({"rows": rows, "best": rows[1], "passages": 200,
                                 "queries": 1000, "averaged": ["conll2003-dev-wide"]}))
    card = ship_card("--calibration", swept)
    assert "| distilled: strict span F1 | 45.0 | 50.0 | 45.0 |" in card
    assert "the average is over conll2003-dev-wide" in card
    assert "on the dev suite's wide condition (200 passages, 1000 queries)" in card
    # asked as given and lowered: both named, the average said to weigh them alike
    rows[1]["per_set"]["conll2003-dev-wide-lower"] = {**rows[1]["per_set"]["conll2003-dev"],
                                                      "strict_f": 0.35}
    rows[1]["strict_f"] = 0.4
    swept.write_text(json.dumps({
        "rows": rows, "best": rows[1], "passages": 400, "queries": 2000,
        "averaged": ["conll2003-dev-wide", "conll2003-dev-wide-lower"]}))
    card = ship_card("--calibration", swept)
    assert "the average is over conll2003-dev-wide, conll2003-dev-wide-lower" in card
    assert "as given and in lower case (`-lower`: every passage and gold mention lowered), " \
           "weighed alike" in card
    assert "wide condition as given and in lower case" in card
    assert "(400 passages, 2000 queries)" in card
    # zero-shot rows with precision / recall and the interval, beside the previous default's
    for name, f, ci in (("zs", 0.3, [0.25, 0.35]), ("prev", 0.2, [0.15, 0.26])):
        (tmp_path / name).mkdir()
        ai = {"strict": {"f": f, "p": 0.1, "r": 0.6}, "partial": {"f": f}, "uniner": {"f": f},
              "counts": {"passages": 200}}
        (tmp_path / name / "metrics.json").write_text(json.dumps({
            "run": {"seed": 0}, "datasets": {"AI": ai},
            "averages": {"overall": {"strict": f, "strict_ci95": ci}}}))
    result = CliRunner().invoke(app, ["--run", str(run), "--dest", str(dest), "--eval",
                                      str(tmp_path / "zs"), "--previous-eval",
                                      str(tmp_path / "prev")])
    assert result.exit_code == 0, result.output
    card = (dest / "README.md").read_text()
    assert "| distilled: strict span F1 | 30.0 | 30.0 |" in card
    assert "| previous default: strict span F1 | 20.0 | 20.0 |" in card
    assert "| distilled: strict precision / recall | 10 / 60 | |" in card
    assert "95% bootstrap interval (passages resampled within each set): 25.0 to 35.0." in card
    assert "15.0 to 26.0" in card and "AI 200" in card
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["--run", str(tmp_path / "nothing"), "--dest", str(dest)])
    assert result.exit_code == 2 and "train a LoRA run first" in result.output
