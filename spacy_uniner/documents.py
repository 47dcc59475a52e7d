"""Reading documents: one reader for ``ray_jobs.annotate`` and ``ray_jobs.extract``.

An input is a file or a folder (walked recursively, in path order; hidden
files and folders are left out) of

* text files (``.txt``, ``.md``, ``.text``): a file is one document, named by
  its path under the folder (``text_blocks``: read instead as blocks of
  paragraphs of about that many characters, ``NAME#k``, so that a huge file
  is never held whole; the teacher does this);
* JSON lines (``.jsonl``, ``.json``, ``.ndjson``): a JSON object per line;
* parquet files;
* folders written by ``datasets``' ``save_to_disk`` (every split).

Records (JSON lines, parquet and ``datasets`` rows) take their text from
``text_field`` and their id from ``id_field`` (:func:`read_input`'s default:
``id`` when the input has one; without an id field, the hash of the text, so
that identical texts are one document).

Every document comes back as an :class:`InputRow`, in input order. One that
cannot be used (a line that is not UTF-8 or not a JSON object, a record
without text, a text file that is not UTF-8) comes back with an ``error`` that
names the file and the line, never dropped: the caller records it
(``extract``) or reports it (``annotate``). A file that cannot be read at all
(a damaged parquet file, no text column) raises :class:`InputFileError`, naming
it. :func:`read_input` with ``strict`` (``extract``) checks the whole input's
kind and fields before anything is read; without (``annotate``, which skips
what it cannot use and says so) a folder may mix kinds.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .passages import passage_hash

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
KINDS = {"txt": TEXT_SUFFIXES, "jsonl": JSONL_SUFFIXES, "parquet": PARQUET_SUFFIXES}
_READ_ROWS = 4096  # rows per parquet read


class InputFileError(ValueError):
    """A file of the input that cannot be read at all; the message names it."""


class InputRow(NamedTuple):
    """One input document: its id, text (None if unusable), the input error if any,
    where it is (``docs.jsonl line 7``, ``docs.parquet row 3``, ``sub/a.txt``) and
    whether its id was given (an id field, a path) rather than made from its text."""

    doc_id: str
    text: Optional[str]
    error: Optional[str]
    where: str
    keyed: bool


def is_dataset_dir(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk``."""
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def file_kind(path: Path) -> Optional[str]:
    """RETURNS (Optional[str]): "txt", "jsonl", "parquet", "datasets", or None."""
    if path.is_dir():
        return "datasets" if is_dataset_dir(path) else None
    suffix = path.suffix.lower()
    return next((kind for kind, suffixes in KINDS.items() if suffix in suffixes), None)


def input_files(path: Path) -> List[Path]:
    """The documents' files of ``path`` (itself if a file or a ``datasets`` folder),
    in path order, hidden ones left out; a ``datasets`` folder is one entry."""
    if not path.is_dir() or is_dataset_dir(path):
        return [path]
    found: List[Path] = []
    for child in sorted(path.rglob("*")):
        parts = child.relative_to(path).parts
        if any(part.startswith(".") for part in parts):
            continue
        if any(is_dataset_dir(path.joinpath(*parts[:i])) for i in range(1, len(parts))):
            continue  # inside a datasets folder: its files are read through it
        if file_kind(child) is not None:
            found.append(child)
    return found


def _unicode_problem(value: str) -> Optional[str]:
    """A string that cannot be written as UTF-8 (a lone surrogate from a JSON escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode ({err.reason} at character {err.start})"
    return None


def parse_line(raw: bytes, number: int) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
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


def _short(err: BaseException, most: int = 500) -> str:
    message = f"{type(err).__name__}: {err}"
    return message if len(message) <= most else message[: most - 1] + "…"


@dataclass(frozen=True)
class DocumentSource:
    """The documents of one input (see the module's docstring); :func:`read_input` makes it.

    files: the files (and ``datasets`` folders) read, in order.
    id_field: the id field in use; None gives records the hash of their text as id.
    text_blocks: read text files as blocks of paragraphs of about this many
        characters (None: a file is one document).
    """

    path: Path
    files: Tuple[Path, ...]
    text_field: str = "text"
    id_field: Optional[str] = None
    text_blocks: Optional[int] = None

    @property
    def kinds(self) -> List[str]:
        return sorted({file_kind(f) or "?" for f in self.files})

    @property
    def kind(self) -> str:
        """The input's kind ("txt", "jsonl", "parquet", "datasets"), or "mixed"."""
        kinds = self.kinds
        return kinds[0] if len(kinds) == 1 else "mixed"

    def name(self, file: Path) -> str:
        """How ``file`` is named in ids and messages: its path under the input folder."""
        return file.name if file == self.path else file.relative_to(self.path).as_posix()

    def rows(self) -> Iterator[InputRow]:
        """YIELDS every document of the input, in input order, repeats included.
        RAISES InputFileError at a file that cannot be read."""
        for file in self.files:
            yield from self.file_rows(file)

    def file_rows(self, file: Path) -> Iterator[InputRow]:
        """YIELDS the documents of one of :attr:`files`."""
        kind = file_kind(file)
        if kind == "jsonl":
            yield from self._jsonl_rows(file)
        elif kind == "parquet":
            yield from self._parquet_rows(file)
        elif kind == "datasets":
            yield from self._dataset_rows(file)
        elif self.text_blocks:
            yield from self._text_blocks(file)
        else:
            yield self._text_file(file)

    def _jsonl_rows(self, file: Path) -> Iterator[InputRow]:
        name = self.name(file)
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                where = f"{name} line {number}"
                record, problem = parse_line(raw, number)
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
        number = 0
        try:
            parquet = pq.ParquetFile(file)
            self._check_columns(file, parquet.schema_arrow.names)
            columns = [self.text_field] + ([self.id_field] if self.id_field else [])
            for batch in parquet.iter_batches(batch_size=_READ_ROWS, columns=columns):
                texts = batch.column(self.text_field).to_pylist()
                ids = batch.column(self.id_field).to_pylist() if self.id_field else None
                for i, raw in enumerate(texts):
                    number += 1
                    yield self._record(raw, ids[i] if ids else None, f"{name} row {number}")
        except (pa.ArrowException, OSError) as err:
            raise InputFileError(f"{file}: could not read it as parquet: {_short(err)}") from err

    def _dataset_rows(self, folder: Path) -> Iterator[InputRow]:
        import datasets

        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as err:  # datasets raises several types for a damaged folder
            raise InputFileError(
                f"{folder}: not a datasets folder saved with save_to_disk ({_short(err)})"
            ) from err
        splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
        for split, dataset in splits:
            self._check_columns(folder, dataset.column_names, split)
            name = f"{self.name(folder)}/{split}" if split else self.name(folder)
            for number, row in enumerate(dataset, start=1):
                raw_id = row.get(self.id_field) if self.id_field else None
                yield self._record(row[self.text_field], raw_id, f"{name} row {number}")

    def _check_columns(self, file: Path, names: List[str], split: str = "") -> None:
        for wanted, option in ((self.text_field, "--text-field"), (self.id_field, "--id-field")):
            if wanted and wanted not in names:
                where = f"{file} (split {split!r})" if split else str(file)
                raise InputFileError(
                    f"{where}: no field {wanted!r} ({option}); fields: {', '.join(names)}"
                )

    def _text_file(self, file: Path) -> InputRow:
        name = self.name(file)
        try:
            return InputRow(name, file.read_bytes().decode("utf-8"), None, name, True)
        except UnicodeDecodeError as err:
            return InputRow(
                name, None, f"not UTF-8 text ({err.reason} at byte {err.start})", name, True
            )

    def _text_blocks(self, file: Path) -> Iterator[InputRow]:
        """Blocks of paragraphs (ended by a blank line once a quarter of ``text_blocks``
        characters is reached, or at ``text_blocks``), streamed; a part that is not
        UTF-8 is an error row, and the rest of the file is not read."""
        name, most = self.name(file), self.text_blocks or 0
        index, buffer, size = 0, [], 0
        with file.open("rb") as handle:
            for line in handle:
                buffer.append(line)
                size += len(line)
                if (line.strip() or size < most // 4) and size < most:
                    continue
                row = self._block(name, index, b"".join(buffer))
                buffer, size = [], 0
                if row is not None:
                    yield row
                    index += 1
                    if row.error:
                        return
        row = self._block(name, index, b"".join(buffer))
        if row is not None:
            yield row

    @staticmethod
    def _block(name: str, index: int, raw: bytes) -> Optional[InputRow]:
        where = f"{name}#{index}"
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            problem = f"not UTF-8 text ({err.reason} at byte {err.start} of block {index})"
            return InputRow(where, None, f"{problem}; the rest of the file is not read", name, True)
        return InputRow(where, text, None, where, True) if text else None

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


def _field_names(source: DocumentSource) -> Optional[List[str]]:
    """The fields every record file has (parquet and datasets: their columns; JSON lines:
    those of the first record); None when no file holds a record (an empty input)."""
    import pyarrow.parquet as pq

    common: Optional[List[str]] = None
    first_problem = None
    for file in source.files:
        kind, names = file_kind(file), None
        if kind == "parquet":
            try:
                names = list(pq.read_schema(file).names)
            except Exception as err:
                raise InputFileError(
                    f"{file}: could not read it as parquet: {_short(err)}"
                ) from err
        elif kind == "datasets":
            names = list(_dataset_columns(file))
        elif kind == "jsonl":
            with file.open("rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if raw.strip():
                        record, problem = parse_line(raw, number)
                        if record is not None:
                            names = list(record)
                            break
                        where = f"{source.name(file)} line {number}"
                        first_problem = first_problem or f"{where}: {problem}"
        if names is not None:
            common = names if common is None else [n for n in common if n in names]
    if common is None and first_problem is not None:
        raise ValueError(
            f"{source.path}: not JSON lines: no line holds a JSON object (first: {first_problem})"
        )
    return common


def _dataset_columns(folder: Path) -> Iterable[str]:
    """The columns every split of a ``datasets`` folder has, from its metadata."""
    try:
        if (folder / "dataset_dict.json").exists():
            splits = json.loads((folder / "dataset_dict.json").read_text("utf-8"))["splits"]
        else:
            splits = ["."]
        columns: Optional[List[str]] = None
        for split in splits:
            info = json.loads((folder / split / "dataset_info.json").read_text("utf-8"))
            names = list(info["features"])
            columns = names if columns is None else [n for n in columns if n in names]
        return columns or []
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputFileError(
            f"{folder}: not a datasets folder saved with save_to_disk ({_short(err)})"
        ) from err


def read_input(
    path: Path,
    text_field: str = "text",
    id_field: Optional[str] = None,
    *,
    strict: bool = True,
    text_blocks: Optional[int] = None,
) -> DocumentSource:
    """Check ``path``; RETURNS (DocumentSource) its documents, to read.

    strict: the input is one kind (a file, or a folder of one kind of file), its
        records have ``text_field`` (and ``id_field``), and ``id_field`` defaults
        to ``id`` when they have one: checked here, before anything is read.
        Without it a folder may mix kinds, a file without the text field raises
        :class:`InputFileError` when its rows are read, and records without
        ``id_field`` get the hash of their text as id.
    text_blocks: see :class:`DocumentSource`.
    RAISES FileNotFoundError for a missing path; ValueError (naming the path) for
        an input that ``strict`` refuses.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = tuple(input_files(path))
    if path.is_file() and file_kind(path) is None:
        raise ValueError(
            f"{path}: unsupported input; give a .jsonl, .parquet, text file or a folder of them"
        )
    source = DocumentSource(path, files, text_field, id_field, text_blocks)
    if not strict:
        return source
    if len(source.kinds) != 1:
        found = ", ".join(source.kinds) or "none"
        raise ValueError(
            f"{path}: a folder must hold one kind of input (.txt, .jsonl or .parquet files, "
            f"or datasets folders); found {found}"
        )
    if source.kind == "txt":
        return DocumentSource(path, files, text_field, None, text_blocks)
    names = _field_names(source)
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
    return DocumentSource(path, files, text_field, id_field, text_blocks)
