"""Extract entities from a corpus with a universal_ner pipeline on Ray Data.

    python -m ray_jobs.extract --input docs.jsonl --output out/ --labels "person,organization" \
        --actors 2 --batch-size 16

INPUT is a JSONL file, a parquet file, or a folder of such files or of .txt
files (one document per file, named by its path). Writes OUTPUT/entities.parquet
(doc_id, label, start_char, end_char, text, score), OUTPUT/status.parquet (one row
per document: ok, or error with the message), OUTPUT/summary.json, and the
batches they are made from under OUTPUT/parts/. A rerun skips the documents
already there (documents recorded as errors too, unless --retry-errors).
Rows that repeat an id are refused (--dedupe first keeps the first of each); an
OUTPUT holding results for another input is refused (--append adds to it).
Joins the Ray cluster at $RAY_ADDRESS (or --ray-address), else starts a local Ray.
"""

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, help=__doc__)


class Dedupe(str, Enum):
    error = "error"
    first = "first"


@app.command()
def main(
    input: Path = typer.Option(..., "--input", help="JSONL, parquet, or a folder of .txt files."),
    output: Path = typer.Option(..., "--output", help="Output folder."),
    labels: str = typer.Option(..., "--labels", help="Comma-separated entity types."),
    model: str = typer.Option(
        "default",
        help="'default' (the distilled student), 'smollm2-135m-instruct', a local HF folder "
        "or a cached hub id.",
    ),
    pipeline: Optional[Path] = typer.Option(
        None,
        help="A saved pipeline folder with a universal_ner component, instead of --model "
        "(its own student settings are used; must be readable by every Ray node).",
    ),
    adapter: Optional[Path] = typer.Option(None, help="A LoRA adapter folder over --model."),
    actors: int = typer.Option(2, help="Ray actors, each holding the pipeline."),
    num_gpus: float = typer.Option(
        0.0, help="GPUs per actor; > 0 runs --model on the actor's GPU."
    ),
    cpus_per_actor: float = typer.Option(1.0, help="CPUs per actor."),
    batch_size: int = typer.Option(16, help="Documents per actor call."),
    student_batch_size: int = typer.Option(16, help="Queries --model decodes together."),
    max_new_tokens: int = typer.Option(96, help="Longest reply per query of --model."),
    text_field: str = typer.Option("text", help="Text field of JSONL / parquet records."),
    id_field: Optional[str] = typer.Option(
        None, help="Id field of records (default: 'id' if present, else a hash of the text)."
    ),
    retry_errors: bool = typer.Option(
        False, help="Process documents recorded as errors again; the new record replaces the old."
    ),
    limit: Optional[int] = typer.Option(
        None, help="Process only the first N remaining documents (in input order) this run."
    ),
    ray_address: Optional[str] = typer.Option(
        None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    dedupe: Dedupe = typer.Option(
        Dedupe.error,
        help="Rows that repeat an id: 'error' refuses the input, naming them; "
        "'first' keeps the first row of each id.",
    ),
    append: bool = typer.Option(
        False,
        help="Add this input's documents to an OUTPUT holding results for another input "
        "(ids already there count as done).",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Our INFO messages, and Ray's and transformers' own."
    ),
) -> None:
    """Extract entities into OUTPUT/entities.parquet and OUTPUT/status.parquet (one row per
    document: ok, or error and its message); a rerun does only the documents not there yet."""
    from spacy_uniner.cli_logging import configure_cli_logging
    from spacy_uniner.extraction import ExtractOptions, extract, format_summary

    configure_cli_logging(verbose)
    options = ExtractOptions(
        input=input,
        output=output,
        labels=[label.strip() for label in labels.split(",") if label.strip()],
        model=model,
        pipeline=pipeline,
        adapter=adapter,
        actors=actors,
        num_gpus=num_gpus,
        cpus_per_actor=cpus_per_actor,
        batch_size=batch_size,
        student_batch_size=student_batch_size,
        max_new_tokens=max_new_tokens,
        text_field=text_field,
        id_field=id_field,
        retry_errors=retry_errors,
        limit=limit,
        ray_address=ray_address,
        progress=progress,
        dedupe=dedupe.value,
        append=append,
        quiet=not verbose,
    )
    try:
        summary = extract(options, echo=lambda m: typer.echo(m, err=True))
    except (ValueError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_summary(summary))
    if summary["errors"]:
        typer.echo(
            f"{summary['errors']} documents are recorded as errors in {output / 'status.parquet'}; "
            "--retry-errors processes them again.",
            err=True,
        )


if __name__ == "__main__":
    app()
