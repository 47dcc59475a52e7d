"""A local OpenAI-compatible teacher: replays real ChatGPT answers, with fault injection.

    python -m ray_jobs.teacher_server --port 8765 --fail-rate 0.2 --fail-status 429,500

Serves on 127.0.0.1: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /stats`` (request counters) and ``POST /stats/reset``. Known Pile-NER
passages are answered from ../shared/data/pile-ner, anything else with ``[]``.
"""

from pathlib import Path
from typing import Optional

import typer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    port: int = typer.Option(8765, help="Port on 127.0.0.1 (0: any free port)."),
    data_dir: Path = typer.Option(DEFAULT_DATA, help="The shared data folder (holds pile-ner/)."),
    fail_rate: float = typer.Option(0.0, help="Share of requests answered with an error."),
    fail_status: str = typer.Option(
        "429", help="Error statuses to inject, comma separated: 429,500,503."
    ),
    delay_ms: float = typer.Option(0.0, help="Latency added to every request."),
    garbage_rate: float = typer.Option(
        0.0, help="Share of replies damaged (prose, truncation, quotes ...)."
    ),
    retry_after_ms: Optional[int] = typer.Option(
        None, help="Send retry-after-ms with injected errors."
    ),
    seed: int = typer.Option(0, help="Seed of the fault injection."),
) -> None:
    """Serve the replay teacher until interrupted."""
    from spacy_uniner.openai_server import OpenAIServer
    from spacy_uniner.teacher.replay import ReplayTeacher

    statuses = [int(s) for s in fail_status.split(",") if s.strip()]
    bad = [s for s in statuses if s not in (429, 500, 503)]
    if bad:
        raise typer.BadParameter(f"--fail-status accepts 429, 500, 503; got {bad}")
    teacher = ReplayTeacher.from_shared_data(data_dir)
    server = OpenAIServer(
        teacher,
        port=port,
        fail_rate=fail_rate,
        fail_status=statuses,
        delay_ms=delay_ms,
        garbage_rate=garbage_rate,
        retry_after_ms=retry_after_ms,
        seed=seed,
    )
    typer.echo(
        f"replay teacher on {server.base_url} ({len(teacher.passages())} passages); "
        "GET /stats counts requests",
        err=True,
    )
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    app()
