"""A scripted universal_ner pipeline on disk, for the Ray actors to load."""

from pathlib import Path

import pytest

LABELS = ["person", "city"]
REPLIES = {"person": '["Ada Lovelace"]', "city": '["London"]'}
SCORES = {"person": 0.9, "city": 0.6}
FAIL_MARKER = "BOOM"  # the scripted student raises on passages holding it
EXIT_MARKER = "EXIT"  # test.ExitOnceStudent.v1 ends its actor on the first passage holding it


def scripted_block(**overrides) -> dict:
    block = {
        "@uniner_models": "test.ScriptedStudent.v1",
        "replies": REPLIES,
        "scores": SCORES,
        "fail_on": [FAIL_MARKER],
    }
    block.update(overrides)
    return block


def exit_once_block(flag_file: Path) -> dict:
    return {
        "@uniner_models": "test.ExitOnceStudent.v1",
        "student": scripted_block(),
        "marker": EXIT_MARKER,
        "flag_file": str(flag_file),
    }


def expected_entities(text: str) -> list:
    """What the scripted student finds in a document of :func:`document_text`."""
    out = []
    for label, mention in (("person", "Ada Lovelace"), ("city", "London")):
        start = text.find(mention)
        if start >= 0:
            out.append((label, start, start + len(mention), mention, SCORES[label]))
    return sorted(out, key=lambda e: (e[1], e[0]))


def document_text(i: int, marker: str = "") -> str:
    return f"Note {i}: Ada Lovelace wrote to Babbage from London.{' ' + marker if marker else ''}"


@pytest.fixture(scope="session")
def exit_flag(tmp_path_factory) -> Path:
    """While this file exists, test.ExitOnceStudent.v1 does nothing; delete it to re-arm."""
    return tmp_path_factory.mktemp("flags") / "exited"


@pytest.fixture(scope="session")
def scripted_pipeline_dir(tmp_path_factory, exit_flag) -> Path:
    """A saved pipeline whose student answers from a script, raises on FAIL_MARKER and
    ends its process once on EXIT_MARKER."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={"labels": LABELS, "model": exit_once_block(exit_flag)})
    path = tmp_path_factory.mktemp("scripted-pipeline")
    nlp.to_disk(path)
    return path
