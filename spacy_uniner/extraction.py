"""Run a ``universal_ner`` pipeline over a corpus on Ray Data, resumably.

Documents are read through Ray Data (JSONL, parquet, or a folder of ``.txt``
files, one document per file) and given a stable id; those not done yet wait
in Ray's object store and go in batches to a pool of actors
(:class:`ExtractPredictor`, ``compute=ActorPoolStrategy``, ``num_gpus`` per
actor); each actor loads the pipeline once (and answers full-width warm-up
texts, :func:`warm_up_texts`) and returns plain columns for its batch. Batches
are ``batch_size`` documents, the last one per actor cut in two so that the
actors finish together. An actor that dies is replaced and its batch run again
(at most ``actor_retries`` times, then the run stops; what was written stays).

Exactly once: every batch comes back as one table that holds, per document,
its status (``ok`` or ``error`` with the message) *and* its entities, and the
driver writes it as one parquet file under ``OUTPUT/parts/`` (written to a
temporary name, then renamed). A run killed at any point therefore leaves
only whole batches behind; a rerun reads the ids in ``parts/`` and processes
only the documents that are not there. The outputs are derived from
``parts/`` at the end of every run, also one that failed:

* ``entities.parquet`` — doc_id, label, start_char, end_char, text, score;
* ``status.parquet`` — doc_id, status, error, entities, run_id: one row per input id;
* ``summary.json`` — totals and this run's counts and speed;
* ``extract.json`` — the labels and model the results were made with; a rerun
  with other settings is refused rather than mixing results.

A document that fails (bad input, the model raising) is recorded with its
error, never dropped. A rerun keeps those records unless ``retry_errors``; then
the documents are processed again and the new record supersedes the old one
(``status.parquet`` still has one row per id).
"""

import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .teacher.corpus import JSONL_SUFFIXES, PARQUET_SUFFIXES, passage_hash

logger = logging.getLogger("spacy_uniner")

PARTS_DIR = "parts"
ENTITIES_FILE = "entities.parquet"
STATUS_FILE = "status.parquet"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "extract.json"
TEXT_SUFFIXES = (".txt",)
MAX_ERROR_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Settings that change what a document's result is: a rerun must match them.
MANIFEST_KEYS = (
    "labels",
    "model",
    "pipeline",
    "adapter",
    "max_new_tokens",
    "text_field",
    "id_field",
)


def _result_schema():
    import pyarrow as pa

    entity = pa.struct(
        [
            ("label", pa.string()),
            ("start_char", pa.int64()),
            ("end_char", pa.int64()),
            ("text", pa.string()),
            ("score", pa.float64()),
        ]
    )
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("entities", pa.list_(entity)),
        ]
    )


def _input_schema():
    import pyarrow as pa

    return pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("input_error", pa.string())])


@dataclass(frozen=True)
class PipelineSpec:
    """Which pipeline the actors load: a saved one (``pipeline``) or a fresh one over ``model``.

    labels: the entity types asked for (passed per call, also to a saved pipeline).
    model: "default", "smollm2-135m-instruct", a local HF folder or a cached hub id.
    pipeline: a folder written by ``nlp.to_disk`` holding a ``universal_ner``
        component; its own student settings are used.
    adapter, device, max_new_tokens, student_batch_size: HFStudent settings for ``model``.
    """

    labels: Tuple[str, ...]
    model: str = "default"
    pipeline: Optional[str] = None
    adapter: Optional[str] = None
    device: str = "cpu"
    max_new_tokens: int = 96
    student_batch_size: int = 16

    def load(self) -> Any:
        """RETURNS (Language): the pipeline (a student loads its weights on first use)."""
        if self.pipeline is not None:
            import spacy

            return spacy.load(self.pipeline)
        from .cli import build_pipeline

        return build_pipeline(
            list(self.labels),
            self.model,
            max_new_tokens=self.max_new_tokens,
            adapter=self.adapter,
            device=self.device,
            batch_size=self.student_batch_size,
        )


def find_component(nlp: Any, source: str) -> Tuple[str, Any]:
    """RETURNS (Tuple[str, UniversalNER]): the pipeline's ``universal_ner`` component."""
    from .component import UniversalNER

    found = [(name, pipe) for name, pipe in nlp.pipeline if isinstance(pipe, UniversalNER)]
    if len(found) != 1:
        raise ValueError(
            f"{source}: expected one universal_ner component, found {len(found)} "
            f"(pipeline: {nlp.pipe_names})"
        )
    return found[0]


def _error_message(err: BaseException) -> str:
    message = _ANSI.sub("", f"{type(err).__name__}: {err}")  # Ray colours its tracebacks
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


WARM_UP_TEXT = "Ada Lovelace wrote the first program in London in 1843."
_WARM_UP_SENTENCES = (
    WARM_UP_TEXT,
    "Grace Hopper worked on the UNIVAC I at Remington Rand in Philadelphia.",
    "Alan Turing was born in Maida Vale, London, in 1912.",
)


def warm_up_texts(component: Any, labels: Sequence[str], most: int) -> List[str]:
    """RETURNS the texts an actor answers before its first batch: full windows
    (``max_passage_tokens`` student tokens each), as many as fill the rows its
    student decodes together (``batch_size`` queries, one per label and window),
    at most ``most``; each starts differently, so none shares another's passage.

    A batch's largest buffers (its keys and values, a full prefill) are then
    allocated and touched at start-up: a model that runs out of memory at full
    width fails before it takes a batch, and the first batch is not slowed by
    fresh pages (on a virtual machine, two processes touching fresh memory at
    once are slow at it)."""
    rows = max(1, int(getattr(component.model, "batch_size", 1) or 1))
    count = max(1, min(most, -(-rows // max(1, len(labels)))))
    tokens = component.max_passage_tokens
    body = " ".join(_WARM_UP_SENTENCES * (1 + 8 * tokens // len(" ".join(_WARM_UP_SENTENCES))))
    texts = []
    for i in range(count):
        text = f"Note {i + 1}. {body}"
        offsets = component.model.token_offsets(text)
        texts.append(text[: offsets[tokens - 1][1]] if len(offsets) > tokens else text)
    return texts


class ExtractPredictor:
    """Ray Data callable class: loads the pipeline once, annotates a batch of documents.

    ``__call__`` takes columns ``doc_id``, ``text`` and optionally ``input_error``
    (a Mapping of sequences or a pyarrow Table) and RETURNS a pyarrow Table with
    one row per input document: doc_id, status ("ok" / "error"), error and its
    entities. A document that fails is recorded with the error; when a batch of
    the component fails, its documents are tried one by one so that only the
    failing ones are marked.
    """

    def __init__(self, spec: PipelineSpec, batch_size: int = 16) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.nlp = spec.load()
        self.name, component = find_component(self.nlp, spec.pipeline or spec.model)
        self.spans_key = component.spans_key
        self.labels = list(spec.labels)
        # Load the weights and answer full-width texts now (warm_up_texts): a model
        # that cannot load or run (a GPU out of memory) stops the run when the actors
        # start, instead of marking every document as an error; the first batch then
        # runs at full speed.
        load = getattr(component.model, "load", None)
        if callable(load):
            load()
        warm_up = warm_up_texts(component, self.labels, most=batch_size)
        started = time.perf_counter()
        list(self.nlp.pipe(warm_up, component_cfg={self.name: {"labels": self.labels}}))
        logger.info(
            "Warm-up: %d texts of up to %d tokens x %d labels in %.1f s",
            len(warm_up),
            component.max_passage_tokens,
            len(self.labels),
            time.perf_counter() - started,
        )
        self._failed: Dict[int, BaseException] = {}
        self.nlp.set_error_handler(self._record_failure)

    def _record_failure(self, name: str, proc: Any, docs: List[Any], err: Exception) -> None:
        for doc in docs:
            self._failed[doc._context] = err

    def _annotate(
        self, items: List[Tuple[str, int]]
    ) -> Tuple[Dict[int, Any], Dict[int, BaseException]]:
        """Run the pipeline over (text, index) pairs; RETURNS docs and failures by index."""
        self._failed = {}
        docs: Dict[int, Any] = {}
        try:
            for doc, index in self.nlp.pipe(
                items,
                as_tuples=True,
                batch_size=self.batch_size,
                component_cfg={self.name: {"labels": self.labels}},
            ):
                docs[index] = doc
        except Exception as err:  # outside a component (e.g. the tokenizer): the rest failed
            for _, index in items:
                if index not in docs:
                    self._failed.setdefault(index, err)
        return docs, dict(self._failed)

    def _entities(self, doc: Any) -> List[Dict[str, Any]]:
        group = doc.spans[self.spans_key] if self.spans_key in doc.spans else []
        scores = list(group.attrs.get("scores", [])) if len(group) else []
        return [
            {
                "label": span.label_,
                "start_char": span.start_char,
                "end_char": span.end_char,
                "text": span.text,
                "score": float(score),
            }
            for span, score in zip(group, scores)
        ]

    def __call__(self, batch: Union[Mapping[str, Sequence[Any]], Any]) -> Any:
        import pyarrow as pa

        columns = batch.to_pydict() if isinstance(batch, pa.Table) else batch
        ids = [str(i) for i in columns["doc_id"]]
        texts = list(columns["text"])
        input_errors = (
            list(columns["input_error"]) if "input_error" in columns else [None] * len(ids)
        )
        rows: List[Dict[str, Any]] = [
            {"doc_id": doc_id, "status": "error", "error": error, "entities": []}
            for doc_id, error in zip(ids, input_errors)
        ]
        todo = [(texts[i], i) for i, row in enumerate(rows) if row["error"] is None]
        docs, failed = self._annotate(todo)
        for index in sorted(failed):
            if len(todo) > 1:  # find out which documents of the failed batch are at fault
                single, single_failed = self._annotate([(texts[index], index)])
                docs.update(single)
                failed[index] = single_failed.get(index, failed[index])
                if index in single:
                    del failed[index]
        for index, doc in docs.items():
            rows[index].update(status="ok", error=None, entities=self._entities(doc))
        for index, err in failed.items():
            rows[index]["error"] = _error_message(err)
            logger.warning("Document %s failed: %s", ids[index], rows[index]["error"])
        return pa.Table.from_pylist(rows, schema=_result_schema())


# ---------------------------------------------------------------- reading


def _input_kind(path: Path) -> str:
    """RETURNS (str): "jsonl", "parquet" or "txt" for a file or a folder of such files."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        suffixes = {path.suffix.lower()}
    else:
        suffixes = {
            p.suffix.lower()
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        }
    kinds = set()
    for suffix in suffixes:
        if suffix in JSONL_SUFFIXES:
            kinds.add("jsonl")
        elif suffix in PARQUET_SUFFIXES:
            kinds.add("parquet")
        elif suffix in TEXT_SUFFIXES:
            kinds.add("txt")
    if path.is_file() and not kinds:
        raise ValueError(
            f"{path}: unsupported input; give a .jsonl, .parquet or a folder of .txt files"
        )
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise ValueError(
            f"{path}: a folder must hold one kind of input (.txt, .jsonl or .parquet files); "
            f"found {found}"
        )
    return kinds.pop()


def _field_names(path: Path, kind: str) -> List[str]:
    """The fields of the first record (JSONL) or the schema (parquet) of the first file."""
    suffixes = JSONL_SUFFIXES if kind == "jsonl" else PARQUET_SUFFIXES
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    )
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(files[0]).names)
    for file in files:
        with file.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError(
                            f"{file}: a line holds {type(record).__name__}, not an object"
                        )
                    return list(record)
    raise ValueError("no records")


def read_input(path: Path, text_field: str = "text", id_field: Optional[str] = None):
    """Open ``path`` with Ray Data; RETURNS (dataset, kind, id_field actually used).

    Ids: ``.txt`` documents are named by their path under the folder; records
    use ``id_field`` (default: the ``id`` field when the input has one, else a
    hash of the text, so that identical texts are one document).
    """
    import ray.data

    path = Path(path)
    kind = _input_kind(path)
    source = str(path.resolve())
    try:
        if kind == "txt":
            return (
                ray.data.read_binary_files(source, include_paths=True, file_extensions=["txt"]),
                kind,
                None,
            )
        names = _field_names(path, kind)
        if kind == "jsonl":
            ds = ray.data.read_json(
                source, lines=True, file_extensions=[s.lstrip(".") for s in JSONL_SUFFIXES]
            )
        else:
            ds = ray.data.read_parquet(source, file_extensions=["parquet"])
    except Exception as err:
        raise ValueError(f"{path}: could not read it as {kind}: {_error_message(err)}") from err
    if text_field not in names:
        raise ValueError(
            f"{path}: no field {text_field!r} (fields: {', '.join(names)}); "
            "choose the text with --text-field"
        )
    if id_field is not None and id_field not in names:
        raise ValueError(
            f"{path}: no field {id_field!r} (fields: {', '.join(names)}); "
            "choose the id with --id-field, or leave it out to use 'id' or a hash of the text"
        )
    if id_field is None and "id" in names:
        id_field = "id"
    return ds, kind, id_field


def _normalize(
    table: Any,
    *,
    kind: str,
    root: str,
    text_field: str,
    id_field: Optional[str],
    done: Any,
) -> Any:
    """Input rows → (doc_id, text, input_error), minus the ids in ``done``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = []
    if kind == "txt":
        for data, path in zip(table.column("bytes").to_pylist(), table.column("path").to_pylist()):
            doc_id = os.path.relpath("/" + path.lstrip("/"), root) if root else path
            try:
                rows.append((doc_id, data.decode("utf-8"), None))
            except UnicodeDecodeError as err:
                rows.append((doc_id, None, f"not UTF-8 text ({err.reason} at byte {err.start})"))
    else:
        texts = table.column(text_field).to_pylist()
        ids = table.column(id_field).to_pylist() if id_field else [None] * len(texts)
        for raw, raw_id in zip(texts, ids):
            error = None
            text = raw if isinstance(raw, str) else None
            if text is None:
                error = (
                    f"no text in field {text_field!r}"
                    if raw is None
                    else f"field {text_field!r} holds {type(raw).__name__}, not text"
                )
            fingerprint = passage_hash(text if text is not None else repr(raw))
            if not id_field:
                doc_id = fingerprint
            elif raw_id is None or raw_id == "":
                doc_id = f"<no id>:{fingerprint}"
                error = error or f"no id in field {id_field!r}"
            else:
                doc_id = str(raw_id)
            rows.append((doc_id, text, error))
    out = pa.table(
        {
            "doc_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "input_error": [r[2] for r in rows],
        },
        schema=_input_schema(),
    )
    if done is not None and len(done):
        out = out.filter(pc.invert(pc.is_in(out.column("doc_id"), value_set=done)))
    return out


def read_documents(
    ds: Any,
    *,
    kind: str,
    root: str,
    text_field: str,
    id_field: Optional[str],
    done: Any = None,
    limit: Optional[int] = None,
    block_rows: Optional[int] = None,
) -> Iterator[Any]:
    """Stream the Ray Data read; YIELDS (pa.Table) blocks of (doc_id, text, input_error)
    without the ids in ``done``, at most ``limit`` rows in all, each a copy of its rows
    (not a view of a larger block). With ``block_rows``, every block but the last has
    exactly that many rows, whatever the sizes of the read's own blocks: a short block
    would be a batch too small to keep an actor's decoder full.

    The rows are normalised here, in the driver: a Ray task would first have to import
    this package (and spaCy, and torch) in every fresh worker.
    """
    import pyarrow as pa

    left = limit
    pending = None  # rows read but not yet yielded
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        block = _normalize(
            table, kind=kind, root=root, text_field=text_field, id_field=id_field, done=done
        )
        if left is not None:
            block = block.slice(0, left)
            left -= block.num_rows
        if block_rows is None:
            if block.num_rows:
                yield block
        else:
            pending = block if pending is None else pa.concat_tables([pending, block])
            while pending.num_rows >= block_rows:
                yield _copy_rows(pending, 0, block_rows)
                pending = pending.slice(block_rows)
        if left == 0:
            break
    if pending is not None and pending.num_rows:
        yield _copy_rows(pending, 0, pending.num_rows)


def _copy_rows(block: Any, start: int, stop: int) -> Any:
    """RETURNS rows [start, stop) of ``block`` as a table of their own: a slice would
    be a view that takes its whole parent block along into Ray's object store."""
    return block.take(list(range(start, stop)))


def halves(blocks: Sequence[Any]) -> List[Any]:
    """RETURNS each block of two rows or more cut in two, in order.

    Used for the last blocks of a run, one per actor: whichever actor is free takes the
    next block, so smaller last blocks leave less time with one actor working alone.
    """
    out = []
    for block in blocks:
        if block.num_rows < 2:
            out.append(block)
            continue
        half = (block.num_rows + 1) // 2
        out.append(_copy_rows(block, 0, half))
        out.append(_copy_rows(block, half, block.num_rows))
    return out


# ---------------------------------------------------------------- results on disk


def _atomic_write_table(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_parts(out: Path) -> Any:
    """RETURNS (pa.Table): the latest record of every document in ``out/parts``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = _result_schema().append(pa.field("run_id", pa.string()))
    parts = sorted((out / PARTS_DIR).glob("part-*.parquet")) if (out / PARTS_DIR).is_dir() else []
    tables = []
    seen: set = set()
    for part in reversed(parts):  # newest first: a later record supersedes an earlier one
        table = pq.read_table(part, schema=schema)
        ids = table.column("doc_id")
        if seen:
            table = table.filter(pc.invert(pc.is_in(ids, value_set=pa.array(list(seen)))))
        seen.update(table.column("doc_id").to_pylist())
        tables.append(table)
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(reversed(tables))


def write_outputs(out: Path, records: Any) -> Dict[str, int]:
    """Derive entities.parquet and status.parquet from the records; RETURNS counts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    entities = records.column("entities")
    counts = pc.list_value_length(entities).fill_null(0)
    status = pa.table(
        {
            "doc_id": records.column("doc_id"),
            "status": records.column("status"),
            "error": records.column("error"),
            "entities": counts,
            "run_id": records.column("run_id"),
        }
    )
    flat = pc.list_flatten(entities)
    owner = pc.take(records.column("doc_id"), pc.list_parent_indices(entities))
    entity_table = pa.table(
        {
            "doc_id": owner,
            "label": pc.struct_field(flat, "label"),
            "start_char": pc.struct_field(flat, "start_char"),
            "end_char": pc.struct_field(flat, "end_char"),
            "text": pc.struct_field(flat, "text"),
            "score": pc.struct_field(flat, "score"),
        }
    )
    _atomic_write_table(entity_table, out / ENTITIES_FILE)
    _atomic_write_table(status, out / STATUS_FILE)
    ok = int(pc.sum(pc.equal(records.column("status"), "ok")).as_py() or 0)
    return {
        "documents": records.num_rows,
        "ok": ok,
        "errors": records.num_rows - ok,
        "entities": entity_table.num_rows,
    }


def _check_manifest(out: Path, manifest: Dict[str, Any]) -> None:
    """Refuse to add results made with other settings; a folder without results takes any."""
    path = out / MANIFEST_FILE
    if path.exists() and any((out / PARTS_DIR).glob("part-*.parquet")):
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in MANIFEST_KEYS if previous.get(k) != manifest.get(k)]
        if changed:
            details = "; ".join(
                f"{k}: {previous.get(k)!r} there, {manifest.get(k)!r} now" for k in changed
            )
            raise ValueError(
                f"{out} holds results made with other settings ({details}). "
                "Use another --output folder, or delete this one to start again."
            )
    else:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
        os.replace(tmp, path)


# ---------------------------------------------------------------- the job


@dataclass
class ExtractOptions:
    input: Path
    output: Path
    labels: Sequence[str]
    model: str = "default"
    pipeline: Optional[Path] = None
    adapter: Optional[Path] = None
    actors: int = 2
    num_gpus: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 16
    student_batch_size: int = 16
    max_new_tokens: int = 96
    text_field: str = "text"
    id_field: Optional[str] = None
    retry_errors: bool = False
    limit: Optional[int] = None  # this run: only the first N remaining documents, in input order
    actor_retries: int = 3  # times a batch is retried on a fresh actor when its actor dies
    ray_address: Optional[str] = None  # default: $RAY_ADDRESS, else a local Ray
    progress: bool = True

    def spec(self) -> PipelineSpec:
        return PipelineSpec(
            labels=tuple(self.labels),
            model=self.model,
            pipeline=str(Path(self.pipeline).resolve()) if self.pipeline else None,
            adapter=str(Path(self.adapter).resolve()) if self.adapter else None,
            device="cuda" if self.num_gpus > 0 else "cpu",
            max_new_tokens=self.max_new_tokens,
            student_batch_size=self.student_batch_size,
        )

    def validate(self) -> None:
        from .component import normalize_labels

        if self.actors < 1 or self.batch_size < 1 or self.student_batch_size < 1:
            raise ValueError(
                f"actors, batch size and student batch size must be positive, got "
                f"{self.actors}, {self.batch_size} and {self.student_batch_size}"
            )
        if self.num_gpus < 0 or self.cpus_per_actor < 0:
            raise ValueError(
                f"num_gpus and cpus_per_actor must be >= 0, "
                f"got {self.num_gpus} and {self.cpus_per_actor}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive, got {self.limit}")
        if self.pipeline is not None and (self.model != "default" or self.adapter is not None):
            raise ValueError("give a pipeline folder or a model (and adapter), not both")
        if self.pipeline is not None and not Path(self.pipeline).is_dir():
            raise FileNotFoundError(f"{self.pipeline}: no such pipeline folder")
        if self.adapter is not None and not Path(self.adapter).is_dir():
            raise FileNotFoundError(f"{self.adapter}: no such adapter folder")
        looks_local = self.model.startswith(("/", "./", "../", "~"))
        if looks_local and not Path(self.model).expanduser().is_dir():
            raise FileNotFoundError(f"{self.model}: no such model folder")
        self.labels = normalize_labels(list(self.labels))
        if not self.labels:
            raise ValueError("give at least one label, e.g. --labels 'person,organization'")

    def manifest(self) -> Dict[str, Any]:
        spec = self.spec()
        return {
            "labels": list(spec.labels),
            "model": None if spec.pipeline else spec.model,
            "pipeline": spec.pipeline,
            "adapter": spec.adapter,
            "max_new_tokens": None if spec.pipeline else spec.max_new_tokens,
            "text_field": self.text_field,
            "id_field": self.id_field,
        }


def _ray_init(address: Optional[str]) -> bool:
    """Connect to (or start) Ray; RETURNS whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # A local cluster of our own: bound to this machine; keep uv from zipping the repo.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    return True


def _check_resources(options: ExtractOptions) -> None:
    import ray

    total = ray.cluster_resources()
    wanted = {
        "CPU": options.actors * options.cpus_per_actor,
        "GPU": options.actors * options.num_gpus,
    }
    for resource, amount in wanted.items():
        if amount > total.get(resource, 0.0) + 1e-9:
            logger.warning(
                "%d actors need %g %s in all; the cluster has %g now "
                "(the run waits until an autoscaler adds them)",
                options.actors,
                amount,
                resource,
                total.get(resource, 0.0),
            )


def _predictions(
    todo: Any, options: ExtractOptions, spec: PipelineSpec, predictor: type
) -> Iterable[Any]:
    import ray.data

    with warnings.catch_warnings():
        # Ray 2.60 takes max_task_retries only through the deprecated **ray_remote_args;
        # without it a batch that keeps crashing its actor would be retried forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        predicted = todo.map_batches(
            predictor,
            fn_constructor_kwargs={"spec": spec, "batch_size": options.batch_size},
            # A CPU actor takes one batch at a time, so the last batches go to whichever
            # actor is free (a batch queued behind a slow one leaves the other idle at the
            # end); a GPU actor keeps one queued so that it never waits for input.
            compute=ray.data.ActorPoolStrategy(
                size=options.actors,
                max_tasks_in_flight_per_actor=2 if options.num_gpus else 1,
            ),
            num_gpus=options.num_gpus or None,
            num_cpus=options.cpus_per_actor,
            batch_size=None,  # a whole block per call: the driver has sized them
            batch_format="pyarrow",
            max_task_retries=options.actor_retries,
        )
    return predicted.iter_batches(batch_size=None, batch_format="pyarrow")


def extract(
    options: ExtractOptions,
    echo: Callable[[str], None] = logger.info,
    *,
    predictor: type = ExtractPredictor,
) -> Dict[str, Any]:
    """Run the pipeline over ``options.input``; RETURNS the content of ``summary.json``.

    predictor: the Ray Data callable class the actors run: :class:`ExtractPredictor`
        or a subclass of it (e.g. one that records timings, as bench/ray_scaling.py does).
    """
    if not (isinstance(predictor, type) and issubclass(predictor, ExtractPredictor)):
        raise TypeError(f"predictor must be ExtractPredictor or a subclass, not {predictor!r}")
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray
    import ray.data
    from tqdm.auto import tqdm

    start = time.perf_counter()
    options.validate()
    spec = options.spec()
    out = Path(options.output)
    find_component(spec.load(), spec.pipeline or spec.model)  # fail here, not in every actor
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(exist_ok=True)
    _check_manifest(out, options.manifest())
    for stale in (out / PARTS_DIR).glob(".part-*"):  # a killed run's unfinished write
        stale.unlink()

    previous = read_parts(out)
    keep = previous
    if options.retry_errors:
        keep = previous.filter(pc.equal(previous.column("status"), "ok"))
    done = keep.column("doc_id").combine_chunks()
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"

    started = _ray_init(options.ray_address)
    context = ray.data.DataContext.get_current()
    progress_bars = context.enable_progress_bars
    preserve_order = context.execution_options.preserve_order
    context.enable_progress_bars = False  # one bar of our own instead of one per operator
    counters: Counter = Counter()
    extract_start: Optional[float] = None
    error: Optional[BaseException] = None
    try:
        # In input order until the input is read (a Dataset keeps the context it was
        # made in): --limit takes the first remaining documents.
        context.execution_options.preserve_order = True
        ds, kind, id_field = read_input(Path(options.input), options.text_field, options.id_field)
        blocks = read_documents(
            ds,
            kind=kind,
            root=str(Path(options.input).resolve()) if kind == "txt" else "",
            text_field=options.text_field,
            id_field=id_field,
            done=done,
            limit=options.limit,
            # One block per actor call: Ray Data gives an actor a whole block, and its
            # results come back (and are written) as one part.
            block_rows=options.batch_size,
        )
        # The whole input is read before the actors take the CPUs (on a small machine
        # the readers would otherwise wait behind the pool for ever); the blocks wait
        # in Ray's object store, not here.
        refs, total, last = [], 0, []
        for block in blocks:
            last.append(block)
            total += block.num_rows
            if len(last) > options.actors:
                refs.append(ray.put(last.pop(0)))
        refs.extend(ray.put(block) for block in halves(last))
        context.execution_options.preserve_order = preserve_order
        echo(
            f"{options.input}: {total} documents to extract, {previous.num_rows} already in "
            f"{out} ({'errors retried' if options.retry_errors else 'kept'}: "
            f"{previous.num_rows - len(done)} to redo); {options.actors} actors"
        )
        if total:
            _check_resources(options)
            extract_start = time.perf_counter()
            seen: set = set()
            with tqdm(
                total=total,
                desc="extract",
                unit="doc",
                mininterval=0.5,
                disable=not options.progress,
            ) as bar:
                todo = ray.data.from_arrow_refs(refs)
                for sequence, batch in enumerate(_predictions(todo, options, spec, predictor)):
                    ids = batch.column("doc_id").to_pylist()
                    fresh = [doc_id not in seen for doc_id in ids]
                    counters["duplicates"] += fresh.count(False)
                    if not all(fresh):
                        batch = batch.filter(pa.array(fresh))
                    if batch.num_rows:
                        batch = batch.append_column(
                            "run_id", pa.array([run_id] * batch.num_rows, pa.string())
                        )
                        name = f"part-{time.time_ns():020d}-{sequence:06d}.parquet"
                        _atomic_write_table(batch, out / PARTS_DIR / name)
                        seen.update(batch.column("doc_id").to_pylist())
                        ok = int(pc.sum(pc.equal(batch.column("status"), "ok")).as_py() or 0)
                        counters["ok"] += ok
                        counters["errors"] += batch.num_rows - ok
                        counters["entities"] += int(
                            pc.sum(pc.list_value_length(batch.column("entities"))).as_py() or 0
                        )
                    bar.update(len(ids))
                    bar.set_postfix(
                        entities=counters["entities"], errors=counters["errors"], refresh=False
                    )
    except BaseException as err:
        error = err
        raise
    finally:
        context.enable_progress_bars = progress_bars
        context.execution_options.preserve_order = preserve_order
        if started:
            ray.shutdown()
        if counters["duplicates"]:
            logger.warning(
                "%d input rows repeat an id already extracted in this run; kept the first",
                counters["duplicates"],
            )
        totals = write_outputs(out, read_parts(out))
        processed = counters["ok"] + counters["errors"]
        processing = time.perf_counter() - extract_start if extract_start is not None else 0.0
        summary = {
            "input": str(options.input),
            "output": str(out),
            "labels": list(options.labels),
            "model": None if spec.pipeline else spec.model,
            "pipeline": spec.pipeline,
            **totals,
            "run": {
                "run_id": run_id,
                "finished": error is None,
                "error": None if error is None else _error_message(error),
                "processed": processed,
                "ok": counters["ok"],
                "errors": counters["errors"],
                "entities": counters["entities"],
                "duplicate_ids": counters["duplicates"],
                "already_done": len(done),
                "retry_errors": options.retry_errors,
                "seconds": round(time.perf_counter() - start, 2),
                "extract_seconds": round(processing, 2),
                # Over the extraction phase: actor start-up included; Ray start-up and reading not.
                "docs_per_second": round(processed / processing, 2) if processing else 0.0,
                "actors": options.actors,
                "num_gpus": options.num_gpus,
                "batch_size": options.batch_size,
            },
        }
        tmp = out / f".{SUMMARY_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
        os.replace(tmp, out / SUMMARY_FILE)
    return summary


def format_summary(summary: Dict[str, Any]) -> str:
    """A plain-text summary of ``summary.json`` for the terminal."""
    run = summary["run"]
    return "\n".join(
        [
            f"Extraction → {summary['output']} ({summary['pipeline'] or summary['model']}; "
            f"labels: {', '.join(summary['labels'])})",
            f"documents: {summary['documents']} ({summary['ok']} ok, {summary['errors']} errors), "
            f"entities: {summary['entities']}",
            f"this run: {run['processed']} docs ({run['ok']} ok, {run['errors']} errors), "
            f"{run['entities']} entities, {run['already_done']} already done; "
            f"{run['extract_seconds']:.1f} s extracting, {run['docs_per_second']:.2f} docs/s "
            f"with {run['actors']} actors ({run['seconds']:.1f} s in all)",
        ]
    )
