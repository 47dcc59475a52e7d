"""The Ray job against the local replay teacher: faults, resume, cache, prompt changes, secrets."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from spacy_uniner.teacher import AnnotateOptions, Secret, TeacherConfig, TeacherPrompt, annotate

from .conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]


def options(corpus, out, tokenizer_dir, **kwargs):
    defaults = dict(
        corpus=[corpus],
        out=out,
        tokenizer=str(tokenizer_dir),
        workers=2,
        concurrency=4,
        progress=False,
    )
    defaults.update(kwargs)
    return AnnotateOptions(**defaults)


def teacher(server, **kwargs):
    return TeacherConfig(
        model="replay", base_url=server.base_url, max_attempts=8, timeout=10, **kwargs
    )


def read_rows(out):
    jsonl = [json.loads(line) for line in (out / "teacher.jsonl").read_text().splitlines()]
    table = pq.read_table(out / "teacher.parquet").to_pylist()
    assert [r["passage_id"] for r in jsonl] == [r["passage_id"] for r in table]
    return table


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, ray_cluster, replay_teacher, smollm2_tokenizer_dir, shared_data):
    """40 passages against a teacher that fails 20% of requests with 429 or 500."""
    from spacy_uniner.openai_server import OpenAIServer

    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with corpus.open("w") as handle:
        for text in replay_teacher.passages()[:40]:
            handle.write(json.dumps({"text": text}) + "\n")
    out = tmp_path_factory.mktemp("faulty")
    server = OpenAIServer(replay_teacher, fail_rate=0.2, fail_status=(429, 500), seed=1).start()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(handler.format(record))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # every log line of the driver, debug included
    try:
        stats = annotate(
            options(corpus, out, smollm2_tokenizer_dir),
            teacher(server),
            TeacherPrompt.for_variant("type"),
            Secret(SECRET_KEY),
        )
        yield {
            "server": server,
            "stats": stats,
            "out": out,
            "corpus": corpus,
            "logs": records,
            "first_counts": server.stats(),
        }
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        server.stop()


def test_faults_every_passage_exactly_once(faulty_run):
    stats, out, counts = faulty_run["stats"], faulty_run["out"], faulty_run["first_counts"]
    rows = read_rows(out)
    sampled = stats["run"]["sampled"]
    assert sampled >= 40
    ids = [r["passage_id"] for r in rows]
    assert len(ids) == len(set(ids)) == sampled  # every passage once, none lost
    assert (out / "errors.jsonl").read_text() == ""
    failures = counts.get("status_429", 0) + counts.get("status_500", 0)
    assert counts.get("status_429", 0) > 0 and counts.get("status_500", 0) > 0
    # Each injected failure was retried by the client, and counted.
    assert stats["run"]["retries"] == failures
    assert stats["run"]["attempts"] == counts["requests"] == sampled + failures
    # Real answers survive: the entities of a known passage are the replayed pairs.
    assert stats["entities"] > 0 and stats["distinct_types"] > 0
    assert [band["band"] for band in stats["head_tail"]] == ["top 1%", "1-10%", "10-100%"]
    row = rows[0]
    assert row["teacher"] == "replay" and row["prompt_version"] == "uniner.teacher.type.v1"
    assert row["raw_reply"].startswith("[") and row["usage"]["total_tokens"] > 0
    saved = json.loads((out / "stats.json").read_text())
    assert saved["passages"] == sampled and set(saved["dropped"]) >= {
        "unparseable_reply",
        "else_type",
        "non_english",
    }


def test_rerun_makes_zero_calls(faulty_run, smollm2_tokenizer_dir):
    server = faulty_run["server"]
    server.reset()
    stats = annotate(
        options(faulty_run["corpus"], faulty_run["out"], smollm2_tokenizer_dir),
        teacher(server),
        TeacherPrompt.for_variant("type"),
        Secret(SECRET_KEY),
    )
    assert server.stats().get("requests", 0) == 0
    assert stats["run"]["calls"] == 0 and stats["run"]["cache_hits"] == stats["run"]["sampled"]
    assert stats["passages"] == faulty_run["stats"]["passages"]


def test_prompt_change_asks_again(faulty_run, smollm2_tokenizer_dir):
    server = faulty_run["server"]
    server.faults.fail_rate = 0.0
    server.reset()
    custom = TeacherPrompt.for_variant(
        "type", user_template="Extract every named entity with its type.\n\nPassage: {passage}"
    )
    stats = annotate(
        options(faulty_run["corpus"], faulty_run["out"], smollm2_tokenizer_dir, rpm=1200),
        teacher(server),
        custom,
        Secret(SECRET_KEY),
    )
    sampled = stats["run"]["sampled"]
    assert server.stats()["requests"] == stats["run"]["calls"] == sampled
    assert {r["prompt_version"] for r in read_rows(faulty_run["out"])} == {
        "uniner.teacher.type.v1+custom"
    }
    # 1200 rpm = one request every 50 ms, shared by both workers.
    assert stats["run"]["ask_seconds"] >= (sampled - 1) / 20 * 0.95


def test_api_key_never_written(faulty_run, ray_temp_dir):
    assert faulty_run["first_counts"]["with_authorization"] > 0  # the key was sent
    needle = SECRET_KEY.encode()
    for path in faulty_run["out"].rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    assert not any(SECRET_KEY in line for line in faulty_run["logs"])
    assert SECRET_KEY not in repr(Secret(SECRET_KEY)) and SECRET_KEY not in str(Secret(SECRET_KEY))
    # Ray's own session logs (worker stdout/stderr, GCS) don't carry it either.
    logs = ray_temp_dir / "session_latest" / "logs"
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert needle not in path.read_bytes(), path


def test_killed_run_resumes_without_duplicates(
    ray_cluster, teacher_server, small_corpus, tmp_path, smollm2_tokenizer_dir
):
    server = teacher_server(delay_ms=150)
    out = tmp_path / "out"
    env = dict(os.environ, OPENAI_API_KEY=SECRET_KEY, RAY_AUTH_MODE="disabled")
    command = [
        sys.executable,
        "-m",
        "ray_jobs.annotate",
        "--corpus",
        str(small_corpus),
        "--out",
        str(out),
        "--model",
        "replay",
        "--base-url",
        server.base_url,
        "--workers",
        "1",
        "--concurrency",
        "2",
        "--tokenizer",
        str(smollm2_tokenizer_dir),
        "--ray-address",
        ray_cluster,
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    cache = out / "cache.sqlite"
    deadline = time.monotonic() + 120
    cached = 0
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if cache.exists():
                try:
                    with sqlite3.connect(cache, timeout=1) as db:
                        cached = db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
                except sqlite3.OperationalError:
                    cached = 0
                if cached >= 8:
                    break
            time.sleep(0.05)
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
    finally:
        output = process.communicate(timeout=30)[0].decode()
    assert SECRET_KEY not in output
    assert not (out / "teacher.parquet").exists()  # killed before the end
    time.sleep(0.5)  # let the killed driver's in-flight requests finish at the server
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    server.reset()
    stats = annotate(
        options(small_corpus, out, smollm2_tokenizer_dir),
        teacher(server),
        TeacherPrompt.for_variant("type"),
        Secret(SECRET_KEY),
    )
    sampled = stats["run"]["sampled"]
    assert 8 <= cached < sampled
    assert stats["run"]["cache_hits"] == cached
    assert server.stats()["requests"] == sampled - cached  # only what was missing
    ids = [r["passage_id"] for r in read_rows(out)]
    assert len(ids) == len(set(ids)) == sampled


def test_failed_passages_go_to_errors_and_are_retried(
    ray_cluster, teacher_server, small_corpus, tmp_path, smollm2_tokenizer_dir
):
    server = teacher_server(fail_rate=1.0, fail_status=(503,), retry_after_ms=1)
    out = tmp_path / "out"
    config = TeacherConfig(model="replay", base_url=server.base_url, max_attempts=2, timeout=10)
    opts = options(small_corpus, out, smollm2_tokenizer_dir, num_passages=5)
    stats = annotate(opts, config, TeacherPrompt.for_variant("type"), Secret(None))
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert stats["failed_passages"] == len(errors) == 5 and stats["passages"] == 0
    assert all("503" in e["error"] and e["attempts"] == 2 and e["text"] for e in errors)
    assert server.stats()["requests"] == 10  # bounded: 2 attempts each
    server.faults.fail_rate = 0.0
    stats = annotate(opts, config, TeacherPrompt.for_variant("type"), Secret(None))
    assert stats["passages"] == 5 and stats["failed_passages"] == 0
    assert (out / "errors.jsonl").read_text() == ""


def test_bad_corpus_does_not_crash_the_run(tmp_path, smollm2_tokenizer_dir, teacher_server):
    server = teacher_server()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "blob.txt").write_bytes(b"\x00\x01\x02" * 100)
    (bad / "latin1.txt").write_bytes("Caf\xe9".encode("latin-1"))
    stats = annotate(
        options(bad, tmp_path / "out", smollm2_tokenizer_dir),
        teacher(server),
        TeacherPrompt.for_variant("type"),
        Secret(None),
    )
    assert stats["passages"] == 0 and server.stats() == {}
    messages = "\n".join(stats["corpus"]["messages"])
    for name in (
        "empty.txt: empty file",
        "blob.txt: binary content",
        "latin1.txt: not UTF-8 text",
    ):
        assert name in messages
    assert pq.read_table(tmp_path / "out" / "teacher.parquet").num_rows == 0
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["corpus"]["skipped_files"]
