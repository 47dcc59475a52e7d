"""Run a ``universal_ner`` pipeline over a corpus on Ray Data, resumably and exactly once.

Documents (JSONL, parquet, or a folder of ``.txt`` files, one document per
file) are read in the driver, in input order, and given a stable id. The whole
input is checked first (:func:`check_input`): rows that repeat an id are
refused, naming the first few (or, with ``dedupe="first"``, the first row of
each id is kept), and the input's fingerprint (its ids and texts) is compared
with the one recorded in the output folder. Nothing is written before these
checks pass. Those not done yet wait in Ray's object store and go in batches to
a pool of actors (:class:`ExtractPredictor`, ``compute=ActorPoolStrategy``,
``num_gpus`` per actor); each actor loads the pipeline once (and answers
full-width warm-up texts, :func:`warm_up_texts`) and returns plain columns for
its batch. Batches are ``batch_size`` documents, the last one per actor cut in
two so that the actors finish together. An actor that dies is replaced and its
batch run again (at most ``actor_retries`` times, then the run stops; what was
written stays).

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
* ``extract.json`` — the labels and model the results were made with, and the
  fingerprint of the input(s) they are for; a rerun with other settings is
  refused, and one with another input unless ``append``, rather than mixing
  results.

A document that fails (bad input, the model raising) is recorded with its
error, never dropped: a JSONL line that is not UTF-8 or not a JSON object is a
document of its own (id ``<bad line>:FILE line N``) whose error names the file
and line. A rerun keeps those records unless ``retry_errors``; then the
documents are processed again and the new record supersedes the old one
(``status.parquet`` still has one row per id).
"""

import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
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
DEDUPE_POLICIES = ("error", "first")
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

    def __init__(self, spec: PipelineSpec, batch_size: int = 16, quiet: bool = False) -> None:
        if quiet:  # this actor's process: no load bars or library warnings (cli_logging)
            from .cli_logging import quiet_libraries

            quiet_libraries()
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
            logger.info("Document %s failed: %s", ids[index], rows[index]["error"])
        return pa.Table.from_pylist(rows, schema=_result_schema())


# ---------------------------------------------------------------- reading
#
# The input is read in the driver, in input order (files sorted by path), twice:
# once to check it (ids, duplicates, its fingerprint) before anything is written,
# then to cut the documents still to do into blocks for the actors. A bad line or
# row is a document of its own, recorded as an error that names the file and line.

MAX_LISTED = 5  # duplicate ids named in a refusal
_READ_ROWS = 4096  # rows per parquet read


class InputRow(NamedTuple):
    """One input document: its id, text (None if unusable), the input error if any,
    where it is (``docs.jsonl line 7``, ``docs.parquet row 3``, ``sub/a.txt``) and
    whether its id was given (an id field, a path) rather than made from its text."""

    doc_id: str
    text: Optional[str]
    error: Optional[str]
    where: str
    keyed: bool


def _input_kind(path: Path) -> str:
    """RETURNS (str): "jsonl", "parquet" or "txt" for a file or a folder of such files."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        suffixes = {path.suffix.lower()}
    else:
        suffixes = {p.suffix.lower() for p in _visible_files(path)}
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


def _visible_files(folder: Path) -> List[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _unicode_problem(value: str) -> Optional[str]:
    """A string that cannot be written as UTF-8 (a lone surrogate from a JSON escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode ({err.reason} at character {err.start})"
    return None


@dataclass(frozen=True)
class InputSource:
    """``--input``: a JSONL or parquet file, a folder of them, or a folder of ``.txt``
    files (one document each, named by its path under the folder).

    id_field: the id field in use; None gives records the hash of their text as id
        (identical texts are one document).
    """

    path: Path
    kind: str
    files: Tuple[Path, ...]
    text_field: str = "text"
    id_field: Optional[str] = None

    def name(self, file: Path) -> str:
        return file.name if self.path.is_file() else file.relative_to(self.path).as_posix()

    def rows(self) -> Iterator[InputRow]:
        """YIELDS every document of the input, in input order, repeats included."""
        for file in self.files:
            if self.kind == "jsonl":
                yield from self._jsonl_rows(file)
            elif self.kind == "parquet":
                yield from self._parquet_rows(file)
            else:
                yield self._txt_row(file)

    def _jsonl_rows(self, file: Path) -> Iterator[InputRow]:
        name = self.name(file)
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                where = f"{name} line {number}"
                record, problem = _parse_line(raw, number)
                if problem is not None:
                    yield InputRow(f"<bad line>:{where}", None, f"{where}: {problem}", where, False)
                else:
                    yield self._record(
                        record.get(self.text_field),
                        record.get(self.id_field) if self.id_field else None,
                        where,
                    )

    def _parquet_rows(self, file: Path) -> Iterator[InputRow]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = self.name(file)
        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        number = 0
        try:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=_READ_ROWS, columns=columns):
                texts = batch.column(self.text_field).to_pylist()
                ids = batch.column(self.id_field).to_pylist() if self.id_field else None
                for i, raw in enumerate(texts):
                    number += 1
                    yield self._record(raw, ids[i] if ids else None, f"{name} row {number}")
        except (pa.ArrowException, OSError) as err:
            raise ValueError(
                f"{file}: could not read it as parquet: {_error_message(err)}"
            ) from err

    def _txt_row(self, file: Path) -> InputRow:
        name = self.name(file)
        try:
            return InputRow(name, file.read_bytes().decode("utf-8"), None, name, True)
        except UnicodeDecodeError as err:
            return InputRow(
                name, None, f"not UTF-8 text ({err.reason} at byte {err.start})", name, True
            )

    def _record(self, raw_text: Any, raw_id: Any, where: str) -> InputRow:
        text_field = self.text_field
        text = raw_text if isinstance(raw_text, str) else None
        error = None
        if text is None:
            error = (
                f"no text in field {text_field!r}"
                if raw_text is None
                else f"field {text_field!r} holds {type(raw_text).__name__}, not text"
            )
        elif _unicode_problem(text):
            error, text = f"field {text_field!r}: {_unicode_problem(text)}", None
        hashed = passage_hash(raw_text if text is not None else f"{where}:{raw_text!r}")
        if not self.id_field:
            return InputRow(hashed, text, error, where, False)
        if raw_id is None or raw_id == "":
            return InputRow(f"<no id>:{hashed}", text, error or f"no id in field {self.id_field!r}",
                            where, False)
        if isinstance(raw_id, (dict, list, bytes)) or (
            isinstance(raw_id, str) and _unicode_problem(raw_id)
        ):
            problem = f"field {self.id_field!r} holds {type(raw_id).__name__}, not an id"
            return InputRow(f"<bad id>:{where}", text, error or problem, where, False)
        return InputRow(str(raw_id), text, error, where, True)


def _parse_line(raw: bytes, number: int) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """RETURNS (record, None) for a JSON object line, else (None, what is wrong with it)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text ({err.reason} at byte {err.start})"
    line = line.rstrip("\r\n")
    if number == 1:
        line = line.lstrip("\ufeff")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at column {err.colno})"
    except ValueError as err:  # e.g. a number too long to convert
        return None, f"not valid JSON ({err})"
    if not isinstance(record, dict):
        return None, f"holds a JSON {type(record).__name__}, not an object"
    return record, None


def _field_names(source: InputSource) -> Optional[List[str]]:
    """The fields of the first record (JSONL) or the schema of every file (parquet,
    their common fields); None when no line of a JSONL input holds a record."""
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        common: Optional[List[str]] = None
        for file in source.files:
            try:
                names = list(pq.read_schema(file).names)
            except Exception as err:
                raise ValueError(
                    f"{file}: could not read it as parquet: {_error_message(err)}"
                ) from err
            common = names if common is None else [n for n in common if n in names]
        return common
    first_problem = None
    for file in source.files:
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    record, problem = _parse_line(raw, number)
                    if record is not None:
                        return list(record)
                    first_problem = first_problem or f"{source.name(file)} line {number}: {problem}"
    if first_problem is not None:
        raise ValueError(
            f"{source.path}: not JSON lines: no line holds a JSON object "
            f"(first: {first_problem})"
        )
    return None  # no lines at all: an empty input


def read_input(path: Path, text_field: str = "text", id_field: Optional[str] = None) -> InputSource:
    """Check ``path`` and its fields; RETURNS (InputSource) the documents to read.

    Ids: ``.txt`` documents are named by their path under the folder; records
    use ``id_field`` (default: the ``id`` field when the input has one, else a
    hash of the text, so that identical texts are one document).
    """
    path = Path(path)
    kind = _input_kind(path)
    suffixes = {"jsonl": JSONL_SUFFIXES, "parquet": PARQUET_SUFFIXES, "txt": TEXT_SUFFIXES}[kind]
    files = (path,) if path.is_file() else tuple(
        p for p in _visible_files(path) if p.suffix.lower() in suffixes
    )
    if kind == "txt":
        return InputSource(path, kind, files, text_field, None)
    names = _field_names(InputSource(path, kind, files, text_field, id_field))
    if names is not None and text_field not in names:
        raise ValueError(
            f"{path}: no field {text_field!r} (fields: {', '.join(names)}); "
            "choose the text with --text-field"
        )
    if names is not None and id_field is not None and id_field not in names:
        raise ValueError(
            f"{path}: no field {id_field!r} (fields: {', '.join(names)}); "
            "choose the id with --id-field, or leave it out to use 'id' or a hash of the text"
        )
    if id_field is None and names is not None and "id" in names:
        id_field = "id"
    return InputSource(path, kind, files, text_field, id_field)


@dataclass
class InputCheck:
    """What :func:`check_input` found: counts, repeats and the input's fingerprint."""

    rows: int = 0
    documents: int = 0
    duplicate_rows: int = 0  # rows repeating an id given by an earlier row
    duplicates: List[str] = field(default_factory=list)  # the first few, with where
    repeated_texts: int = 0  # rows without an id repeating an earlier row's text
    fingerprint: str = ""

    def duplicates_message(self, source: Any) -> str:
        listed = "; ".join(self.duplicates)
        more = (
            f"; and {self.duplicate_rows - len(self.duplicates)} more"
            if self.duplicate_rows > len(self.duplicates)
            else ""
        )
        return (
            f"{source}: {self.duplicate_rows} rows repeat an id of an earlier row "
            f"({listed}{more}). "
            "Each document needs its own id: fix the ids, choose another --id-field, or pass "
            "--dedupe first to keep the first row of each id."
        )


def check_input(source: InputSource) -> InputCheck:
    """Read the whole input once; RETURNS its counts, duplicate ids and fingerprint.

    The fingerprint covers every (id, text) and not their order: the same documents
    in another order or file layout are the same input."""
    check = InputCheck()
    seen: set = set()
    total = 0
    for row in source.rows():
        check.rows += 1
        digest = hashlib.blake2b(
            f"{row.doc_id}\x00{row.text or ''}".encode("utf-8"), digest_size=16
        ).digest()
        total = (total + int.from_bytes(digest, "big")) % (1 << 128)
        if row.doc_id not in seen:
            seen.add(row.doc_id)
        elif row.keyed:
            check.duplicate_rows += 1
            if len(check.duplicates) < MAX_LISTED:
                check.duplicates.append(f"{row.doc_id!r} again at {row.where}")
        else:
            check.repeated_texts += 1
    check.documents = len(seen)
    check.fingerprint = f"{check.documents}:{total:032x}"
    return check


def read_documents(
    rows: Iterable[InputRow],
    *,
    done: Iterable[str] = (),
    limit: Optional[int] = None,
    block_rows: Optional[int] = None,
) -> Iterator[Any]:
    """YIELDS (pa.Table) blocks of (doc_id, text, input_error): the first row of every
    id, without the ids in ``done``, at most ``limit`` rows in all, in input order.
    With ``block_rows``, every block but the last has exactly that many rows (a short
    block would be a batch too small to keep an actor's decoder full)."""
    import pyarrow as pa

    done = set(done)
    seen: set = set()
    size = block_rows or _READ_ROWS
    left = limit
    pending: List[InputRow] = []

    def block(part: List[InputRow]) -> Any:
        return pa.table(
            {
                "doc_id": [r.doc_id for r in part],
                "text": [r.text for r in part],
                "input_error": [r.error for r in part],
            },
            schema=_input_schema(),
        )

    for row in rows:
        if left == 0:
            break
        if row.doc_id in seen:
            continue
        seen.add(row.doc_id)
        if row.doc_id in done:
            continue
        pending.append(row)
        if left is not None:
            left -= 1
        if len(pending) == size:
            yield block(pending)
            pending = []
    if pending:
        yield block(pending)


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


def _has_results(out: Path) -> bool:
    return (out / PARTS_DIR).is_dir() and any((out / PARTS_DIR).glob("part-*.parquet"))


def _check_manifest(
    out: Path,
    manifest: Dict[str, Any],
    input_record: Optional[Dict[str, Any]] = None,
    append: bool = False,
) -> List[Dict[str, Any]]:
    """Refuse to add results made with other settings, or for another input unless
    ``append``; a folder without results takes any. Reads only.

    manifest: the settings (MANIFEST_KEYS) of this run.
    input_record: {"path", "documents", "fingerprint"} of this run's input (None:
        check the settings only).
    RETURNS (List[dict]): the inputs the folder's results are for, this one included.
    """
    path = out / MANIFEST_FILE
    if not (path.exists() and _has_results(out)):
        return [input_record] if input_record else []
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
    inputs = list(previous.get("inputs") or [])
    if input_record is None:
        return inputs
    if not inputs:  # made before inputs were recorded: nothing to compare with
        return [input_record]
    if any(known.get("fingerprint") == input_record["fingerprint"] for known in inputs):
        return inputs
    if append:
        return inputs + [input_record]
    last = inputs[-1]
    raise ValueError(
        f"{out} holds results for another input: {last.get('path')} "
        f"({last.get('documents')} documents, fingerprint {last.get('fingerprint')}); "
        f"{input_record['path']} has {input_record['documents']} documents, fingerprint "
        f"{input_record['fingerprint']}. Use another --output folder, or pass --append to add "
        "this input's documents to these results (ids already there count as done)."
    )


def _write_manifest(out: Path, manifest: Dict[str, Any], inputs: List[Dict[str, Any]]) -> None:
    path = out / MANIFEST_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    content = {**manifest, "inputs": inputs}
    tmp.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", "utf-8")
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
    dedupe: str = "error"  # a repeated id: "error" refuses the input; "first" keeps the first row
    append: bool = False  # add another input's documents to a folder holding results
    quiet: bool = False  # Ray's, Ray Data's and transformers' own messages off (cli_logging)

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
        if self.dedupe not in DEDUPE_POLICIES:
            raise ValueError(f"dedupe must be one of {DEDUPE_POLICIES}, got {self.dedupe!r}")
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


def _ray_init(address: Optional[str], quiet: bool = False) -> bool:
    """Connect to (or start) Ray; RETURNS whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # A local cluster of our own: bound to this machine; keep uv from zipping the repo.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    level = logging.INFO
    if quiet:
        from .cli_logging import quiet_ray

        level = quiet_ray()
    ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level=level)
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
            fn_constructor_kwargs={
                "spec": spec,
                "batch_size": options.batch_size,
                "quiet": options.quiet,
            },
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

    Refused before anything is written (no output folder is made, nothing in an existing
    one changes): bad options, an input without documents, rows repeating an id (unless
    ``dedupe="first"``), a folder holding results for other settings, or for another
    input (unless ``append``).

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
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: a file, not a folder; give --output a folder")
    manifest = options.manifest()
    _check_manifest(out, manifest)  # other settings: refused before the input is read
    source = read_input(Path(options.input), options.text_field, options.id_field)
    find_component(spec.load(), spec.pipeline or spec.model)  # fail here, not in every actor

    # The whole input is checked before anything is written.
    check = check_input(source)
    if not check.rows:
        raise ValueError(f"{options.input}: no documents in the input; nothing to extract")
    if check.duplicate_rows and options.dedupe == "error":
        raise ValueError(check.duplicates_message(options.input))
    input_record = {
        "path": str(Path(options.input).resolve()),
        "documents": check.documents,
        "fingerprint": check.fingerprint,
    }
    inputs = _check_manifest(out, manifest, input_record, append=options.append)
    if check.duplicate_rows:
        logger.warning(
            "%s: %d rows repeat an id of an earlier row (%s); kept the first of each "
            "(--dedupe first)",
            options.input,
            check.duplicate_rows,
            "; ".join(check.duplicates),
        )

    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(exist_ok=True)
    _write_manifest(out, manifest, inputs)
    for stale in (out / PARTS_DIR).glob(".part-*"):  # a killed run's unfinished write
        stale.unlink()

    previous = read_parts(out)
    keep = previous
    if options.retry_errors:
        keep = previous.filter(pc.equal(previous.column("status"), "ok"))
    done = keep.column("doc_id").to_pylist()
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"

    started = _ray_init(options.ray_address, quiet=options.quiet)
    context = ray.data.DataContext.get_current()
    progress_bars = context.enable_progress_bars
    context.enable_progress_bars = False  # one bar of our own instead of one per operator
    counters: Counter = Counter()
    extract_start: Optional[float] = None
    error: Optional[BaseException] = None
    try:
        blocks = read_documents(
            source.rows(),
            done=done,
            limit=options.limit,
            # One block per actor call: Ray Data gives an actor a whole block, and its
            # results come back (and are written) as one part.
            block_rows=options.batch_size,
        )
        # The whole input is read before the actors take the CPUs; the blocks wait in
        # Ray's object store, not here.
        refs, total, last = [], 0, []
        for block in blocks:
            last.append(block)
            total += block.num_rows
            if len(last) > options.actors:
                refs.append(ray.put(last.pop(0)))
        refs.extend(ray.put(block) for block in halves(last))
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
                    # Every id is sent once; a result that came back twice is not written twice.
                    fresh = [doc_id not in seen for doc_id in ids]
                    counters["repeated_results"] += fresh.count(False)
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
        if started:
            ray.shutdown()
        if counters["repeated_results"]:
            logger.warning(
                "%d results came back twice from Ray; each was written once",
                counters["repeated_results"],
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
                "input_documents": check.documents,
                "input_fingerprint": check.fingerprint,
                "processed": processed,
                "ok": counters["ok"],
                "errors": counters["errors"],
                "entities": counters["entities"],
                "duplicate_ids": check.duplicate_rows,
                "repeated_texts": check.repeated_texts,
                "already_done": len(done),
                "retry_errors": options.retry_errors,
                "appended": len(inputs) > 1 and inputs[-1] is input_record,
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
