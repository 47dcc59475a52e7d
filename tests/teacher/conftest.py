from pathlib import Path

import pytest

from spacy_uniner.teacher.replay import ReplayTeacher

SECRET_KEY = "sk-uniner-test-9f3b2c7e1d-DO-NOT-LEAK"

# ray_cluster (one local Ray for the whole session) is in tests/conftest.py.


@pytest.fixture(scope="session")
def replay_teacher(shared_data) -> ReplayTeacher:
    return ReplayTeacher.from_shared_data(shared_data)


@pytest.fixture(scope="session")
def pile_corpus(shared_data) -> Path:
    return shared_data / "pile-ner" / "pile_ner_type_subset.jsonl"


@pytest.fixture
def teacher_server(replay_teacher):
    """Factory: ``teacher_server(fail_rate=0.2, ...)`` starts a replay server on 127.0.0.1."""
    from spacy_uniner.openai_server import OpenAIServer

    servers = []

    def start(**kwargs):
        server = OpenAIServer(replay_teacher, port=0, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def small_corpus(tmp_path, replay_teacher) -> Path:
    """40 real Pile passages as a JSONL corpus (written to tmp, not the repo)."""
    import json

    path = tmp_path / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for text in replay_teacher.passages()[:40]:
            handle.write(json.dumps({"text": text}) + "\n")
    return path
