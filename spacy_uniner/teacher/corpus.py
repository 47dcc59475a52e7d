"""Corpus readers, chunking into passages and the seeded sample.

Readers accept a text file, a folder (walked recursively), JSONL (text field
configurable), parquet and a local Hugging Face ``datasets`` folder
(``save_to_disk``). A bad input never stops the run: empty, binary, non-UTF-8
or enormous files are skipped or split with a message that names the file,
collected in :class:`CorpusReport` and written to ``stats.json``.

Documents are cut into passages of at most ``max_tokens`` tokens of the
student tokenizer on sentence boundaries; a single sentence longer than that is
cut at token boundaries (and counted), so nothing is dropped silently.
"""

import hashlib
import heapq
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger("spacy_uniner")

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
MAX_DOC_CHARS = 1_000_000
MAX_FILE_BYTES = 8 * 1024**3
MAX_MESSAGES = 20  # per file; the rest are counted
_SENTENCE_END = re.compile(r"([.!?。][\"'”’)\]]*)\s+|\n\s*\n")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|vs|etc|No|Inc|Ltd|Co|Fig|al|e\.g|i\.e)|\b[A-Z])\.$"
)


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    n_tokens: int = 0

    @property
    def hash(self) -> str:
        return passage_hash(self.text)


def passage_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class CorpusReport:
    """Problems met while reading, by file, plus counts."""

    files: int = 0
    documents: int = 0
    passages: int = 0
    duplicate_passages: int = 0
    split_sentences: int = 0
    split_documents: int = 0
    skipped_files: List[str] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    suppressed_messages: int = 0

    def problem(self, message: str, per_file_count: int = 0) -> None:
        if per_file_count < MAX_MESSAGES:
            logger.warning(message)
            self.messages.append(message)
        else:
            self.suppressed_messages += 1

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "documents": self.documents,
            "passages": self.passages,
            "duplicate_passages": self.duplicate_passages,
            "split_sentences": self.split_sentences,
            "split_documents": self.split_documents,
            "skipped_files": list(self.skipped_files),
            "messages": list(self.messages),
            "suppressed_messages": self.suppressed_messages,
        }


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(8192)
    return b"\x00" in head


def _check_file(path: Path, report: CorpusReport, max_file_bytes: int, binary_ok: bool) -> bool:
    try:
        size = path.stat().st_size
    except OSError as err:
        report.problem(f"{path}: cannot read ({err}); skipped.")
        report.skipped_files.append(str(path))
        return False
    if size == 0:
        report.problem(f"{path}: empty file; skipped.")
        report.skipped_files.append(str(path))
        return False
    if size > max_file_bytes:
        report.problem(
            f"{path}: {size:,} bytes is over the limit of {max_file_bytes:,} "
            "(--max-file-bytes); skipped. Split the file or raise the limit."
        )
        report.skipped_files.append(str(path))
        return False
    if not binary_ok and _looks_binary(path):
        report.problem(f"{path}: binary content (NUL bytes), not text; skipped.")
        report.skipped_files.append(str(path))
        return False
    return True


def _split_long(text: str, doc_id: str, path: Path, report: CorpusReport, max_chars: int):
    if len(text) <= max_chars:
        yield doc_id, text
        return
    report.split_documents += 1
    report.problem(
        f"{path}: document {doc_id} has {len(text):,} characters, over {max_chars:,}; "
        "read as consecutive pieces."
    )
    start, piece = 0, 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            space = text.rfind(" ", start + max_chars // 2, end)
            end = space + 1 if space > 0 else end
        yield f"{doc_id}~{piece}", text[start:end]
        start, piece = end, piece + 1


def _read_text(path: Path, report: CorpusReport, max_chars: int) -> Iterator[Document]:
    """Paragraph-streamed: blocks separated by blank lines form documents up to ``max_chars``."""
    try:
        with path.open("r", encoding="utf-8", errors="strict") as handle:
            buffer: List[str] = []
            size, index = 0, 0
            for line in handle:
                buffer.append(line)
                size += len(line)
                if (not line.strip() and size >= max_chars // 4) or size >= max_chars:
                    text = "".join(buffer).strip()
                    if text:
                        for doc_id, piece in _split_long(
                            text, f"{path.name}#{index}", path, report, max_chars
                        ):
                            yield Document(doc_id, piece)
                        index += 1
                    buffer, size = [], 0
            text = "".join(buffer).strip()
            if text:
                for doc_id, piece in _split_long(
                    text, f"{path.name}#{index}", path, report, max_chars
                ):
                    yield Document(doc_id, piece)
    except UnicodeDecodeError as err:
        report.problem(
            f"{path}: not valid UTF-8 ({err.reason} at byte {err.start} of a read block); "
            "the rest of the file is skipped. Convert it with iconv."
        )
        report.skipped_files.append(str(path))


def _read_jsonl(path: Path, report: CorpusReport, text_field: str, max_chars: int):
    bad = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                report.problem(
                    f"{path}:{number}: not valid UTF-8 ({err.reason}); line skipped.", bad
                )
                bad += 1
                continue
            except ValueError as err:
                report.problem(f"{path}:{number}: not JSON ({err}); line skipped.", bad)
                bad += 1
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                report.problem(
                    f"{path}:{number}: no string field {text_field!r} (--text-field); "
                    "line skipped.",
                    bad,
                )
                bad += 1
                continue
            if text.strip():
                yield from (
                    Document(doc_id, piece)
                    for doc_id, piece in _split_long(
                        text, f"{path.name}#{number}", path, report, max_chars
                    )
                )


def _read_rows(rows: Iterable[object], name: str, path: Path, report, text_field, max_chars):
    bad = 0
    for number, text in enumerate(rows):
        if not isinstance(text, str):
            report.problem(
                f"{path}: row {number} field {text_field!r} is not a string; skipped.", bad
            )
            bad += 1
            continue
        if text.strip():
            for doc_id, piece in _split_long(text, f"{name}#{number}", path, report, max_chars):
                yield Document(doc_id, piece)


def _read_parquet(path: Path, report: CorpusReport, text_field: str, max_chars: int):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        report.problem(f"{path}: not a readable parquet file ({err}); skipped.")
        report.skipped_files.append(str(path))
        return
    if text_field not in parquet.schema_arrow.names:
        report.problem(
            f"{path}: no column {text_field!r} (--text-field); columns are "
            f"{parquet.schema_arrow.names}; skipped."
        )
        report.skipped_files.append(str(path))
        return

    def rows():
        for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
            yield from batch.column(0).to_pylist()

    yield from _read_rows(rows(), path.name, path, report, text_field, max_chars)


def _is_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def _read_dataset(path: Path, report: CorpusReport, text_field: str, max_chars: int):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        report.problem(f"{path}: not a datasets folder saved with save_to_disk ({err}); skipped.")
        report.skipped_files.append(str(path))
        return
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        if text_field not in dataset.column_names:
            report.problem(
                f"{path}: split {split or 'default'!r} has no column {text_field!r} "
                f"(--text-field); columns are {dataset.column_names}; skipped."
            )
            continue
        name = f"{path.name}/{split}" if split else path.name
        rows = (row[text_field] for row in dataset)
        yield from _read_rows(rows, name, path, report, text_field, max_chars)


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_dir() and not _is_dataset_dir(path):
        for child in sorted(path.rglob("*")):
            if child.is_dir() and _is_dataset_dir(child):
                yield child
            elif child.is_file() and child.suffix.lower() in (
                TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
            ):
                if not any(_is_dataset_dir(parent) for parent in child.parents):
                    yield child
    else:
        yield path


def read_documents(
    paths: Sequence[Path],
    report: CorpusReport,
    text_field: str = "text",
    max_doc_chars: int = MAX_DOC_CHARS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Iterator[Document]:
    """All documents in ``paths``; problems go to ``report``, nothing raises for bad data."""
    for root in paths:
        root = Path(root)
        if not root.exists():
            report.problem(f"{root}: no such file or folder; skipped.")
            report.skipped_files.append(str(root))
            continue
        for path in iter_files(root):
            report.files += 1
            if path.is_dir():
                reader = _read_dataset(path, report, text_field, max_doc_chars)
            else:
                suffix = path.suffix.lower()
                if not _check_file(path, report, max_file_bytes, suffix in PARQUET_SUFFIXES):
                    continue
                if suffix in PARQUET_SUFFIXES:
                    reader = _read_parquet(path, report, text_field, max_doc_chars)
                elif suffix in JSONL_SUFFIXES:
                    reader = _read_jsonl(path, report, text_field, max_doc_chars)
                else:
                    reader = _read_text(path, report, max_doc_chars)
            for document in reader:
                report.documents += 1
                yield document


# --- chunking ---------------------------------------------------------------

TokenCounter = Callable[[str], int]


def sentences(text: str) -> List[Tuple[int, int]]:
    """Character spans of sentences (end punctuation + space, or a blank line)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end(1) if match.group(1) else match.start()
        if match.group(1) and _ABBREVIATION.search(text[max(start, end - 8) : end]):
            continue  # "Dr. Smith", "J. Smith": not a boundary
        if end > start:
            spans.append((start, end))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


class Chunker:
    """Cut documents into passages of ≤ ``max_tokens`` student tokens on sentence boundaries."""

    def __init__(self, tokenizer, max_tokens: int = 256) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens={max_tokens} is too small for a passage (use ≥ 8).")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _cut_sentence(self, text: str, start: int, end: int) -> List[Tuple[int, int]]:
        """A sentence over the limit: spans cut at token offsets, between words where possible."""
        sentence = text[start:end]
        offsets = self.tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        starts = [offset for offset, _ in offsets]
        # A margin of 2: a cut piece can tokenize slightly differently on its own.
        width = max(1, self.max_tokens - 2)
        spans, i = [], 0
        while i < len(starts):
            j = i + width
            if j < len(starts):
                # Back off to a token that starts a word (offsets may include the space).
                for k in range(j, i, -1):
                    if sentence[starts[k]].isspace() or sentence[starts[k] - 1].isspace():
                        j = k
                        break
            piece_end = starts[j] if j < len(starts) else len(sentence)
            spans.append((start + starts[i], start + piece_end))
            i = j
        return [_trim(text, a, b) for a, b in spans if text[a:b].strip()]

    def chunk(self, document: Document, report: Optional[CorpusReport] = None) -> List[Passage]:
        """Passages that are verbatim slices of the document, each ≤ ``max_tokens`` tokens."""
        text = document.text.strip()
        if not text:
            return []
        whole = self.count(text)
        if whole <= self.max_tokens:
            return [Passage(f"{document.id}:0", text, whole)]
        units: List[Tuple[int, int, int]] = []  # (start, end, tokens)
        for start, end in sentences(text):
            start, end = _trim(text, start, end)
            n = self.count(text[start:end])
            if n > self.max_tokens:
                if report is not None:
                    report.split_sentences += 1
                units.extend(
                    (a, b, self.count(text[a:b])) for a, b in self._cut_sentence(text, start, end)
                )
            else:
                units.append((start, end, n))
        passages: List[Passage] = []
        i = 0
        while i < len(units):
            j, size = i, units[i][2]
            while j + 1 < len(units) and size + units[j + 1][2] + 1 <= self.max_tokens:
                j += 1
                size += units[j][2] + 1
            while True:  # the estimate ignores whitespace between sentences: check exactly
                piece = text[units[i][0] : units[j][1]]
                n = self.count(piece)
                if n <= self.max_tokens or j == i:
                    break
                j -= 1
            passages.append(Passage(f"{document.id}:{len(passages)}", piece, n))
            i = j + 1
        return passages


def _trim(text: str, start: int, end: int) -> Tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def load_student_tokenizer(path: Optional[str] = None):
    """The student's tokenizer (the default student's unless ``path`` is given); cached per path."""
    from transformers import AutoTokenizer

    if path is None:
        from ..default_student import ensure_default_student

        path = str(ensure_default_student())
    return AutoTokenizer.from_pretrained(path)


def sample_passages(
    documents: Iterable[Document],
    chunker: Chunker,
    num_passages: Optional[int],
    seed: int,
    report: CorpusReport,
) -> List[Passage]:
    """A seeded uniform sample of ``num_passages`` distinct passages (all when None).

    Reservoir sampling with seeded random keys, so memory is bounded by the
    sample size; duplicate passage texts are kept once and counted. The sample
    is returned in corpus order.
    """
    rng = random.Random(seed)
    seen = set()
    heap: List[Tuple[float, int, Passage]] = []
    order = 0
    for document in documents:
        for passage in chunker.chunk(document, report):
            if passage.hash in seen:
                report.duplicate_passages += 1
                continue
            seen.add(passage.hash)
            report.passages += 1
            key = rng.random()
            item = (key, order, passage)
            order += 1
            if num_passages is None or len(heap) < num_passages:
                heapq.heappush(heap, item)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, item)
    return [passage for _, _, passage in sorted(heap, key=lambda item: item[1])]
