"""Fixtures for the evaluation tests: slices of the real shared files and an oracle student."""

import json
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from spacy_uniner.models.base import Generation
from spacy_uniner.registry import uniner_models
from spacy_uniner.prompts import parse_query
from spacy_uniner.testing import ScriptedStudent


class OracleStudent(ScriptedStudent):
    """Answers every query with its gold answer from a UniNER-format JSON file.

    ``$ORACLE_FAIL_AFTER`` (if set) makes ``generate`` raise after that many
    calls, to interrupt a run without changing the model config.
    """

    calls_total = 0

    def __init__(self, gold_file: str, default: str = "[]") -> None:
        super().__init__({}, default=default)
        self.answers: Dict[Tuple[str, str], str] = {}
        for item in json.loads(Path(gold_file).read_text(encoding="utf8")):
            conv = item["conversations"]
            passage = conv[0]["value"][len("Text: "):]
            label = conv[-2]["value"][len("What describes "):-len(" in the text?")]
            self.answers[(passage, label)] = conv[-1]["value"]

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        fail_after = os.environ.get("ORACLE_FAIL_AFTER")
        if fail_after is not None and OracleStudent.calls_total >= int(fail_after):
            raise KeyboardInterrupt("simulated interruption")
        OracleStudent.calls_total += 1
        self.calls += 1
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            passage, label = parse_query(prompt)
            out.append(Generation(self.answers.get((passage, label), self.default)))
        return out


@uniner_models("test.OracleStudent.v1")
def make_oracle_student_v1(gold_file: str, default: str = "[]") -> OracleStudent:
    return OracleStudent(gold_file, default=default)


@pytest.fixture
def oracle():
    """The OracleStudent class (its ``calls_total`` counts generate calls)."""
    return OracleStudent


@pytest.fixture(autouse=True)
def _reset_oracle(monkeypatch):
    OracleStudent.calls_total = 0
    monkeypatch.delenv("ORACLE_FAIL_AFTER", raising=False)


def _slice_uniner(src: Path, dst: Path, passages: int) -> Path:
    """The first ``passages`` passages (all their queries) of a UniNER JSON file."""
    data = json.loads(src.read_text(encoding="utf8"))
    out, texts = [], []
    for item in data:
        text = item["conversations"][0]["value"]
        if not texts or texts[-1] != text:
            texts.append(text)
        if len(texts) > passages:
            break
        out.append(item)
    dst.write_text(json.dumps(out))
    return dst


def _slice_bio(src: Path, dst: Path, sentences: int) -> Path:
    lines, n = [], 0
    for line in src.read_text(encoding="utf8").splitlines():
        lines.append(line)
        if not line.strip():
            n += 1
            if n == sentences:
                break
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture
def ai_slice(shared_data, tmp_path) -> Path:
    """The first 4 passages of CrossNER_AI.json (52 queries), written to tmp."""
    return _slice_uniner(shared_data / "benchmarks/uniner/CrossNER_AI.json",
                         tmp_path / "ai_slice.json", 4)


@pytest.fixture
def slice_uniner(tmp_path):
    return lambda src, passages: _slice_uniner(src, tmp_path / f"{src.stem}_{passages}.json",
                                               passages)


@pytest.fixture
def slice_bio(tmp_path):
    return lambda src, n: _slice_bio(src, tmp_path / f"{src.parent.name}_{src.stem}_{n}.txt", n)
