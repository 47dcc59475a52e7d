"""Passages per second of the default student: 5 labels, 256-token passages, 2 threads.

Passages are real Pile passages (../shared/data/pile-ner) cut to exactly 256
student tokens. Writes bench/results/student_speed.json.

    python bench/student_speed.py [--passages 8] [--model default]
"""

import json
import platform
import statistics
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pile-ner" / "pile_ner_type_subset.jsonl"
LABELS = ["person", "organization", "location", "date", "product"]


def main(
    passages: int = typer.Option(8, help="Passages per run."),
    runs: int = typer.Option(3, help="Timed runs (median reported) after one warm-up."),
    model: str = typer.Option("default", help="Student model."),
    threads: int = typer.Option(2, help="torch threads."),
    max_new_tokens: int = typer.Option(96, help="Longest reply."),
    batch_size: int = typer.Option(8, help="Queries per generate call."),
    output: Path = typer.Option(ROOT / "bench" / "results" / "student_speed.json"),
) -> None:
    import spacy
    import torch

    torch.set_num_threads(threads)
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "universal_ner",
        config={
            "labels": LABELS,
            "model": {"@uniner_models": "spacy_uniner.HFStudent.v1", "name": model,
                      "threads": threads, "max_new_tokens": max_new_tokens,
                      "batch_size": batch_size},
            "store_replies": True,
        },
    )
    pipe.initialize()
    texts = []
    seen = set()
    for line in DATA.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["input"]
        if text in seen:
            continue
        seen.add(text)
        offsets = pipe.model.token_offsets(text)
        if len(offsets) >= 256:
            texts.append(text[: offsets[255][1]])
        if len(texts) == passages:
            break
    assert all(len(pipe.model.token_offsets(t)) <= 256 for t in texts)

    def run() -> float:
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=len(texts)))
        elapsed = time.perf_counter() - start
        assert all(d.user_data["universal_ner"]["stats"]["windows"] == 1 for d in docs)
        return elapsed

    run()  # warm-up
    before = dict(pipe.stats)
    times = [run() for _ in range(runs)]
    queries = (pipe.stats["queries"] - before.get("queries", 0)) / runs
    failures = (pipe.stats["parse_failures"] - before.get("parse_failures", 0)) / runs
    median = statistics.median(times)
    result = {
        "benchmark": "student_speed",
        "model": model,
        "threads": threads,
        "passages": len(texts),
        "tokens_per_passage": 256,
        "labels": LABELS,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "passages_per_s": round(len(texts) / median, 4),
        "queries_per_s": round(queries / median, 3),
        "unparseable_reply_rate": round(failures / queries, 3),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
