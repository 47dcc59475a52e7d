"""Passages per second of the default student: 10 types, 256-token passages, 2 threads,
and the same figure as a fraction of this machine's roofline.

Passages are real Pile passages (../shared/data/pile-ner) cut to exactly 256
student tokens, run through the spaCy component (prefix-shared decoding).
The roofline is measured in the same run: a 2-thread fp32 matmul's GFLOP/s
divided by 2 x parameters x prompt tokens per passage, where the prompt tokens
are those a passage's 10 queries need prefilled with sharing (the passage
prefix once plus each query's own tail). Decoding is not in the roofline, so
the fraction is conservative. Writes bench/results/student_speed.json.

    python bench/student_speed.py [--passages 8] [--model default] [--dtype float32]
"""

import json
import platform
import statistics
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pile-ner" / "pile_ner_type_subset.jsonl"
LABELS = ["person", "organization", "location", "date", "product", "event",
          "country", "programming language", "law", "disease"]


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main(
    passages: int = typer.Option(8, help="Passages per run."),
    runs: int = typer.Option(3, help="Timed runs (median reported) after one warm-up."),
    model: str = typer.Option("default", help="Student model."),
    threads: int = typer.Option(2, help="torch threads."),
    max_new_tokens: int = typer.Option(96, help="Longest reply."),
    batch_size: int = typer.Option(16, help="Queries per generate call."),
    dtype: str = typer.Option("float32", help="Student weights: float32 or bfloat16."),
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
                      "batch_size": batch_size, "dtype": dtype},
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

    from spacy_uniner import prompts as P
    from spacy_uniner.models.decoding import common_prefix_len

    tok = pipe.model.tokenizer
    prompt_tokens = 0
    for text in texts:
        ids = [tok(P.render_query(text, label))["input_ids"] for label in LABELS]
        prompt_tokens += sum(len(x) for x in ids) - common_prefix_len(ids) * (len(ids) - 1)
    prompt_tokens /= len(texts)
    params = sum(p.numel() for p in pipe.model.load()._model.parameters())
    gflops = matmul_gflops(threads)
    roofline = gflops * 1e9 / (2 * params * prompt_tokens)

    run()  # warm-up
    before = dict(pipe.stats)
    times = [run() for _ in range(runs)]
    queries = (pipe.stats["queries"] - before.get("queries", 0)) / runs
    failures = (pipe.stats["parse_failures"] - before.get("parse_failures", 0)) / runs
    median = statistics.median(times)
    gflops = max(gflops, matmul_gflops(threads))  # again after the runs: the best seen
    roofline = gflops * 1e9 / (2 * params * prompt_tokens)
    result = {
        "benchmark": "student_speed",
        "model": model,
        "threads": threads,
        "passages": len(texts),
        "tokens_per_passage": 256,
        "labels": LABELS,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "dtype": dtype,
        "prefix_sharing": pipe.model.prefix_sharing,
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "passages_per_s": round(len(texts) / median, 4),
        "queries_per_s": round(queries / median, 3),
        "unparseable_reply_rate": round(failures / queries, 3),
        "parameters": params,
        "prompt_tokens_per_passage": round(prompt_tokens, 1),
        "matmul_gflops_fp32": round(gflops, 1),
        "roofline_passages_per_s": round(roofline, 4),
        "fraction_of_roofline": round(len(texts) / median / roofline, 3),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"{result['passages_per_s']} passages/s = {result['fraction_of_roofline']} of the "
          f"roofline ({result['roofline_passages_per_s']} passages/s at "
          f"{result['matmul_gflops_fp32']} GFLOP/s)")


if __name__ == "__main__":
    typer.run(main)
