"""Names declared in packaging metadata resolve, also in a fresh process."""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]


def run_fresh(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, timeout=300, cwd="/",
    )


@pytest.mark.parametrize(
    "group,name",
    [(group, name) for group, names in DECLARED.items() for name in names],
)
def test_declared_entry_point_is_installed_and_loads(group, name):
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    assert name in installed, f"{group}:{name} not installed; reinstall the package"
    assert installed[name].value == DECLARED[group][name]
    assert callable(installed[name].load())


@pytest.mark.parametrize("name", sorted(DECLARED["thinc_uniner_models"]))
def test_model_backend_resolves_in_registry(name):
    import spacy_uniner  # noqa: F401
    from spacy.util import registry

    # found through the entry point, not only because the package imported it
    assert registry.uniner_models.get_entry_point(name) is not None
    assert registry.uniner_models.get(name) is not None


def test_factory_found_without_importing_the_package(tiny_model_dir, tmp_path):
    model = {"@uniner_models": "spacy_uniner.HFStudent.v1", "name": str(tiny_model_dir),
             "max_new_tokens": 4}
    out = tmp_path / "pipeline"
    result = run_fresh(f"""
        import sys, spacy
        assert "spacy_uniner" not in sys.modules  # spaCy finds it through the entry point
        nlp = spacy.blank("en")
        nlp.add_pipe("universal_ner", config={{"labels": ["person"], "model": {model!r}}})
        doc = nlp("Ada Lovelace met Babbage.")
        assert "universal_ner" in doc.spans
        nlp.to_disk({str(out)!r})
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    cfg = (out / "config.cfg").read_text()
    assert "@uniner_models = \"spacy_uniner.HFStudent.v1\"" in cfg
    assert json.loads((out / "universal_ner" / "cfg").read_text())["labels"] == ["person"]
    assert json.loads((out / "universal_ner" / "model" / "student.json").read_text())["name"] == str(
        tiny_model_dir
    )

    # spacy.load in another fresh process, offline, with no network at all
    result = run_fresh(f"""
        import sys, spacy
        nlp = spacy.load({str(out)!r})
        assert "spacy_uniner" in sys.modules
        pipe = nlp.get_pipe("universal_ner")
        doc = nlp("Grace Hopper wrote COBOL.")
        print(pipe.labels, len(doc.spans["universal_ner"]) >= 0, pipe.stats["queries"])
    """, HF_HUB_OFFLINE="1", NO_PROXY="*", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('person',) True 1"


def test_openai_student_found_without_importing_the_package():
    from spacy_uniner.openai_server import OpenAIServer
    from spacy_uniner.testing import ScriptedStudent

    with OpenAIServer(student=ScriptedStudent({"person": '["Ada Lovelace"]'})) as server:
        model = {"@uniner_models": "spacy_uniner.OpenAIStudent.v1", "model": "uniner-test",
                 "base_url": server.base_url, "tokenizer": "words"}
        result = run_fresh(f"""
            import sys, spacy
            assert "spacy_uniner" not in sys.modules  # found through the entry points
            nlp = spacy.blank("en")
            nlp.add_pipe("universal_ner", config={{"labels": ["person"], "model": {model!r}}})
            doc = nlp("Ada Lovelace met Babbage.")
            print(type(nlp.get_pipe("universal_ner").model).__name__,
                  [(s.text, s.label_) for s in doc.spans["universal_ner"]])
        """)
        assert server.stats()["prompts"] == 1
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OpenAIStudent [('Ada Lovelace', 'person')]"
