"""The results of an extraction on disk: parts, the outputs derived from them, the manifest.

Every batch comes back as one table that holds, per document, its status
(``ok`` or ``error`` with the message) *and* its entities (:func:`result_schema`),
and is written as one parquet file under ``OUTPUT/parts/`` (to a temporary
name, then renamed), so a run killed at any point leaves only whole batches
behind; :func:`read_parts` gives the latest record of every document, which is
how a rerun knows what is done. :func:`write_outputs` derives
``entities.parquet`` and ``status.parquet`` from the parts. ``extract.json``
(the manifest) records the settings and the input(s) the results are for;
:func:`check_manifest` refuses to mix in results of other settings or inputs.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

PARTS_DIR = "parts"
ENTITIES_FILE = "entities.parquet"
STATUS_FILE = "status.parquet"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "extract.json"
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


def result_schema():
    """The columns of a part: one row per document, its status, error and entities."""
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


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_table(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def atomic_write_json(content: Any, path: Path) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text, "utf-8"))


def read_parts(out: Path) -> Any:
    """RETURNS (pa.Table): the latest record of every document in ``out/parts``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = result_schema().append(pa.field("run_id", pa.string()))
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
    atomic_write_table(entity_table, out / ENTITIES_FILE)
    atomic_write_table(status, out / STATUS_FILE)
    ok = int(pc.sum(pc.equal(records.column("status"), "ok")).as_py() or 0)
    return {
        "documents": records.num_rows,
        "ok": ok,
        "errors": records.num_rows - ok,
        "entities": entity_table.num_rows,
    }


def has_results(out: Path) -> bool:
    return (out / PARTS_DIR).is_dir() and any((out / PARTS_DIR).glob("part-*.parquet"))


def check_manifest(
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
    if not (path.exists() and has_results(out)):
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


def write_manifest(out: Path, manifest: Dict[str, Any], inputs: List[Dict[str, Any]]) -> None:
    atomic_write_json({**manifest, "inputs": inputs}, out / MANIFEST_FILE)
