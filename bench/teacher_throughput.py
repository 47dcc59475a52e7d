"""Throughput of teacher annotation under a shared rate limit.

The replay teacher answers after 200 ms; two Ray workers share one limit of
R requests per minute. The figure of merit is the achieved request rate, as the
server saw it, divided by R (target ≥ 0.95): the limiter should neither
exceed the limit nor leave it unused.

    python bench/teacher_throughput.py [--rpm 600] [--passages 300]

Writes bench/results/teacher_throughput.json.
"""

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("UNINER_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULT = ROOT / "bench" / "results" / "teacher_throughput.json"

app = typer.Typer(add_completion=False)


def _max_in_window(times, width):
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


@app.command()
def main(
    rpm: float = typer.Option(600.0, help="The shared requests-per-minute limit R."),
    passages: int = typer.Option(300, help="Distinct passages to annotate."),
    latency_ms: float = typer.Option(200.0, help="Teacher latency per request."),
    workers: int = typer.Option(2, help="Ray worker actors."),
    concurrency: int = typer.Option(4, help="Requests in flight per worker."),
    out: Path = typer.Option(RESULT, help="Where to write the JSON result."),
) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    from spacy_uniner.openai_server import OpenAIServer
    from spacy_uniner.teacher import AnnotateOptions, Secret, TeacherConfig, TeacherPrompt, annotate
    from spacy_uniner.teacher.replay import ReplayTeacher

    ray.init(
        num_cpus=2, include_dashboard=False, _temp_dir="/tmp/ray-uniner-bench", log_to_driver=False
    )
    server = OpenAIServer(ReplayTeacher.from_shared_data(DATA), delay_ms=latency_ms).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            options = AnnotateOptions(
                corpus=[DATA / "pile-ner" / "pile_ner_type_subset.jsonl"],
                text_field="input",
                out=Path(tmp),
                num_passages=passages,
                seed=0,
                workers=workers,
                concurrency=concurrency,
                rpm=rpm,
                progress=False,
            )
            teacher = TeacherConfig(model="replay", base_url=server.base_url)
            stats = annotate(options, teacher, TeacherPrompt.for_variant("type"), Secret(None))
        times = sorted(server.arrivals)
    finally:
        server.stop()
        ray.shutdown()
    n = len(times)
    span = times[-1] - times[0]
    # Rate over the run, one inter-arrival gap added so N requests span N intervals.
    achieved = 60 * n / (span + 60 / rpm)
    settled = [t for t in times if t >= times[0] + 1.0]  # after the one-second burst
    steady = 60 * (len(settled) - 1) / (settled[-1] - settled[0]) if len(settled) > 1 else 0.0
    result = {
        "rpm_limit": rpm,
        "latency_ms": latency_ms,
        "workers": workers,
        "concurrency": concurrency,
        "passages": stats["run"]["sampled"],
        "requests": n,
        "span_seconds": round(span, 3),
        "achieved_rpm": round(achieved, 1),
        "ratio": round(achieved / rpm, 4),
        "steady_rpm_after_first_second": round(steady, 1),
        "steady_ratio": round(steady / rpm, 4),
        "max_requests_in_any_1s": _max_in_window(times, 1.0),
        "max_requests_in_any_10s": _max_in_window(times, 10.0),
        "allowed_per_second": rpm / 60,
        "failed": stats["failed_passages"],
        "ask_seconds": stats["run"]["ask_seconds"],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
