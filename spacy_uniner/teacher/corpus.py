"""The teacher's corpus: documents read leniently, cut into passages, a seeded sample.

Documents come from :mod:`spacy_uniner.documents` (text files, folders, JSONL,
parquet, ``datasets`` folders; text files read in blocks of paragraphs). A bad
input never stops the run: a missing path, an empty, binary or enormous file, a
file that cannot be read, a line or row that cannot be used are skipped with a
message that names the file (and line), collected in :class:`CorpusReport` and
written to ``stats.json``; a document over ``max_doc_chars`` is read as
consecutive pieces.

Documents are cut into passages by :class:`spacy_uniner.passages.Chunker`: the
windows the component cuts at inference (without overlap), so the student is
trained on passages cut as it will read them.
"""

import heapq
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from ..documents import InputFileError, InputRow, read_input
from ..passages import Chunker, Passage

logger = logging.getLogger("spacy_uniner")

MAX_DOC_CHARS = 1_000_000
MAX_FILE_BYTES = 8 * 1024**3
MAX_MESSAGES = 20  # per file; the rest are counted


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass
class CorpusReport:
    """Problems met while reading, by file, plus counts.

    split_sentences: passages that had to end inside a sentence (no sentence
        boundary within reach: a sentence longer than a passage).
    """

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

    def skip(self, path: Path, message: str) -> None:
        self.problem(message)
        self.skipped_files.append(str(path))

    def to_dict(self) -> dict:
        return asdict(self)


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(8192)
    return b"\x00" in head


def _check_file(path: Path, report: CorpusReport, max_file_bytes: int) -> bool:
    """Whether a file is worth reading; if not, why goes to ``report``."""
    if path.is_dir():  # a datasets folder
        return True
    try:
        size = path.stat().st_size
    except OSError as err:
        report.skip(path, f"{path}: cannot read ({err}); skipped.")
        return False
    if size == 0:
        report.skip(path, f"{path}: empty file; skipped.")
    elif size > max_file_bytes:
        report.skip(
            path,
            f"{path}: {size:,} bytes is over the limit of {max_file_bytes:,} "
            "(--max-file-bytes); skipped. Split the file or raise the limit.",
        )
    elif not path.suffix.lower() == ".parquet" and _looks_binary(path):
        report.skip(path, f"{path}: binary content (NUL bytes), not text; skipped.")
    else:
        return True
    return False


def _split_long(row: InputRow, where: str, report: CorpusReport, max_chars: int):
    text = row.text or ""
    if len(text) <= max_chars:
        yield Document(row.doc_id, text)
        return
    report.split_documents += 1
    report.problem(
        f"{where}: document {row.doc_id} has {len(text):,} characters, over {max_chars:,}; "
        "read as consecutive pieces."
    )
    start, piece = 0, 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            space = text.rfind(" ", start + max_chars // 2, end)
            end = space + 1 if space > 0 else end
        yield Document(f"{row.doc_id}~{piece}", text[start:end])
        start, piece = end, piece + 1


def read_documents(
    paths: Sequence[Path],
    report: CorpusReport,
    text_field: str = "text",
    max_doc_chars: int = MAX_DOC_CHARS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Iterator[Document]:
    """All usable documents in ``paths``; problems go to ``report``, nothing raises for
    bad data. Text files are read in blocks of paragraphs of up to ``max_doc_chars``."""
    for root in paths:
        try:
            source = read_input(Path(root), text_field, strict=False, text_blocks=max_doc_chars)
        except (OSError, ValueError) as err:
            report.skip(Path(root), f"{err}; skipped.")
            continue
        for path in source.files:
            report.files += 1
            if not _check_file(path, report, max_file_bytes):
                continue
            name, read, problems = source.name(path), 0, 0
            try:
                for row in source.file_rows(path):
                    where = f"{path}{row.where[len(name):]}"
                    if row.error is not None:
                        detail = row.error
                        if detail.startswith(f"{row.where}: "):
                            detail = detail[len(row.where) + 2 :]
                        report.problem(f"{where}: {detail}; skipped.", problems)
                        problems += 1
                        continue
                    if not row.text.strip():
                        continue
                    for document in _split_long(row, where, report, max_doc_chars):
                        read += 1
                        report.documents += 1
                        yield document
            except InputFileError as err:
                report.problem(f"{err}; skipped.")
            if not read:
                report.skipped_files.append(str(path))


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
        passages = chunker.chunk(document.id, document.text)
        report.split_sentences += sum(p.cut in ("space", "token") for p in passages)
        for passage in passages:
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
