"""The `small` workflow of project.yml, end to end on tiny assets with a tiny model.

The project runs in a temporary folder (project.yml copied, code and .venv linked,
every output under it), against the replay teacher that annotate-small serves
itself, and on the session's Ray. `setup` is left out: it would install into the real .venv.
"""

import json
import shutil
from pathlib import Path

import pytest
import spacy

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("spacy_uniner", "ray_jobs", "train", "eval", ".venv")
PASSAGES = 6
EXTRACTED = 3


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "project.yml", root / "project.yml")
    for name in LINKED:
        (root / name).symlink_to(ROOT / name)
    return root


@pytest.fixture
def tiny_corpus(tmp_path, shared_data) -> Path:
    """Pile passages the replay teacher has non-empty answers for."""
    from spacy_uniner.teacher.replay import ReplayTeacher

    teacher = ReplayTeacher.from_shared_data(shared_data)
    texts = [t for t in teacher.passages() if teacher.pairs(t) and len(t) < 600][:PASSAGES]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_small_workflow_runs_and_reruns_skip(project, tiny_corpus, tiny_model_dir, shared_data,
                                             ray_cluster, monkeypatch):
    from weasel.cli.run import check_rerun, project_run
    from weasel.util import load_project_config

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)  # annotate and extract join the session's Ray
    overrides = {
        "vars.shared_data": str(shared_data),
        "vars.threads": 1,
        "vars.labels": "person,location",
        "vars.small.corpus": str(tiny_corpus),
        "vars.small.text_field": "text",
        "vars.small.passages": PASSAGES,
        "vars.small.teacher_workers": 1,
        "vars.small.bio_limit": 2,
        "vars.small.base_model": str(tiny_model_dir),
        "vars.small.max_steps": 2,
        "vars.small.batch_size": 2,
        "vars.small.eval_only": "AI",
        "vars.small.eval_limit": 1,
        "vars.small.max_new_tokens": 4,
        "vars.small.labels": "person,location",
        "vars.small.extract_batch_size": 4,
        "vars.small.extract_limit": EXTRACTED,
    }
    config = load_project_config(project, overrides=overrides)
    steps = config["workflows"]["small"]
    assert steps[0] == "setup"
    commands = {c["name"]: c for c in config["commands"]}
    for name in steps[1:]:
        project_run(project, name, overrides=overrides, capture=True)

    run = project / "runs" / "small"
    import pyarrow.parquet as pq

    assert pq.read_table(run / "teacher" / "teacher.parquet").num_rows == PASSAGES
    data_stats = json.loads((run / "instruct" / "stats.json").read_text())
    assert data_stats["by_source"].get("CoNLL-2003") == 2
    assert json.loads((run / "student" / "metrics.json").read_text())["steps"] == 2
    assert "AI" in json.loads((run / "eval" / "metrics.json").read_text())["datasets"]
    # The packaged pipeline carries the tiny base (not built in) and the adapter.
    weights = run / "pipeline" / "universal_ner" / "weights"
    assert (weights / "base" / "config.json").exists()
    assert (weights / "adapter" / "adapter_model.safetensors").exists()
    nlp = spacy.load(run / "pipeline")
    assert nlp.get_pipe("universal_ner").labels == ("person", "location")
    assert (run / "packages" / "en_uniner_small-0.1.0" / "dist"
            / "en_uniner_small-0.1.0-py3-none-any.whl").exists()
    status = pq.read_table(run / "extract" / "status.parquet").to_pylist()
    assert len(status) == EXTRACTED and {row["status"] for row in status} == {"ok"}
    assert (run / "demo.html").read_text().startswith("<!DOCTYPE html>")
    # Nothing changed: every step would be skipped.
    assert [name for name in steps[1:] if check_rerun(project, commands[name])] == []
    # A changed file reruns the steps that make it or read it, and only those.
    (run / "teacher" / "teacher.parquet").unlink()
    assert [name for name in steps[1:] if check_rerun(project, commands[name])] == [
        "annotate-small", "build-data-small", "extract-small"]


def test_annotate_takes_one_teacher(shared_data, tmp_path, cli_logging_restored):
    from typer.testing import CliRunner

    from ray_jobs.annotate import app

    result = CliRunner().invoke(app, [
        "--corpus", str(shared_data), "--out", str(tmp_path / "out"),
        "--base-url", "http://127.0.0.1:1/v1", "--replay-teacher", str(shared_data)])
    assert result.exit_code == 2
    assert "give --base-url or --replay-teacher, not both" in result.output
