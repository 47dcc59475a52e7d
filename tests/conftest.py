import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNINER_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=os.environ.get("UNINER_RUN_SLOW", "") == "1",
        help="run tests that load the real default student (env UNINER_RUN_SLOW=1)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="needs --run-slow (or UNINER_RUN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


RAY_TEMP_DIR = "/tmp/ray-uniner-tests"


@pytest.fixture(scope="session")
def ray_temp_dir() -> Path:
    """Where the session's Ray keeps its logs (outside the repo)."""
    return Path(RAY_TEMP_DIR)


@pytest.fixture(scope="session")
def ray_cluster(ray_temp_dir):
    """One local Ray (2 CPUs, bound to this machine) for every Ray test of the session.

    RETURNS (str): its GCS address, for subprocesses (``--ray-address``).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(ray_temp_dir), log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set UNINER_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    """The real SmolLM2 tokenizer, from the converted default student."""
    from spacy_uniner.default_student import ensure_default_student

    return ensure_default_student()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    """A tiny random-weight Llama with the real SmolLM2 tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_config(tiny_model_dir):
    """Model block for ``nlp.add_pipe`` that uses the tiny model."""
    return {
        "@uniner_models": "spacy_uniner.HFStudent.v1",
        "name": str(tiny_model_dir),
        "max_new_tokens": 8,
        "batch_size": 8,
        "threads": 1,
    }


@pytest.fixture
def cli_logging_restored():
    """Undo what a command line run in this process sets (cli_logging): warning filters,
    transformers' verbosity and progress bars, the package logger's level."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    level = logging.getLogger("spacy_uniner").level
    with warnings.catch_warnings():
        yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    logging.getLogger("spacy_uniner").setLevel(level)
