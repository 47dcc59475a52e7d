"""Reading an extraction's input in the driver: checked whole, then cut into blocks.

The input (:func:`spacy_uniner.documents.read_input`, strict) is read twice, in
input order: once by :func:`check_input` (its ids, rows that repeat one, its
fingerprint) before anything is written, then by :func:`document_blocks`, which
cuts the documents still to do into blocks for the actors (one block per actor
call; :func:`halves` cuts the last ones in two). A bad line or row is a document
of its own, recorded as an error that names the file and line.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Sequence

from ..documents import DocumentSource, InputRow

MAX_LISTED = 5  # duplicate ids named in a refusal
_BLOCK_ROWS = 4096  # rows per block without block_rows


def _input_schema():
    import pyarrow as pa

    return pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("input_error", pa.string())])


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


def check_input(source: DocumentSource) -> InputCheck:
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


def document_blocks(
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
    size = block_rows or _BLOCK_ROWS
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
