"""Prefix-shared decoding vs one full prefill per type query, same student, same prompts.

50 CrossNER passages (UniNER's own CrossNER_AI file, a seeded sample) x all
13 types of the dataset, fp32. Ways, each on the same prompts in every round:

- per_type: the reference — every query prefilled in full and decoded by
  ``model.generate`` in length-sorted batches (HFStudent prefix_sharing=false);
- shared: the default — SharedDecoder, one packed prefill per passage and
  continuous batching.

Rounds alternate the order of the ways; one warm-up first; medians reported.
Answers are compared query by query with per_type (greedy decoding everywhere).
Writes bench/results/prefix_sharing.json.

    python bench/prefix_sharing.py [--passages 50] [--rounds 3] [--model default] [--adapter DIR]
"""

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import typer
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "benchmarks" / "uniner" / "CrossNER_AI.json"


def main(
    passages: int = typer.Option(50, help="Passages (seeded sample of the file)."),
    rounds: int = typer.Option(3, help="Timed rounds (median reported) after one warm-up."),
    model: str = typer.Option("default", help="Student model (as HFStudent `name`)."),
    adapter: Optional[str] = typer.Option(None, help="A LoRA adapter folder over --model."),
    threads: int = typer.Option(2, help="torch threads, pinned."),
    max_new_tokens: int = typer.Option(64, help="Longest reply."),
    batch_size: int = typer.Option(16, help="Queries decoded together (every way)."),
    data: Path = typer.Option(DATA, help="A UniNER evaluation JSON file."),
    output: Path = typer.Option(ROOT / "bench" / "results" / "prefix_sharing.json"),
) -> None:
    import torch

    from spacy_uniner import prompts as P
    from spacy_uniner.evaluation.benchmarks import load_uniner_json
    from spacy_uniner.models.decoding import packed_tokens
    from spacy_uniner.models.hf import HFStudent

    torch.set_num_threads(threads)
    bench = load_uniner_json(data, limit=passages, seed=0)
    queries = [P.render_query(p.text, label) for p in bench.passages for label in bench.labels]
    student = HFStudent(model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        threads=threads, adapter=adapter).load()
    tok = student.tokenizer
    ids = [tok(q)["input_ids"] for q in queries]
    full_tokens = sum(len(x) for x in ids)
    # Shared: each passage's common token prefix once, plus every query's own tail.
    k = len(bench.labels)
    shared_tokens = sum(packed_tokens(ids[i : i + k]) for i in range(0, len(ids), k))

    def run(sharing: bool) -> Callable[[List[str]], Any]:
        def generate(prompts: List[str]) -> Any:
            student.prefix_sharing = sharing
            return student.generate(prompts)

        return generate

    ways = {
        # the reference: every query prefilled in full, model.generate in batches
        "per_type": run(False),
        # the default: one prefill per passage, continuous batching
        "shared": run(True),
    }

    def timed(way: str, prompts: List[str]):
        start = time.perf_counter()
        gens = ways[way](prompts)
        return time.perf_counter() - start, [g.text for g in gens]

    warm = queries[: 2 * len(bench.labels)]
    for way in ways:
        timed(way, warm)
    times: Dict[str, List[float]] = {way: [] for way in ways}
    same = {way: 0 for way in ways}
    names = list(ways)
    for r in range(rounds):
        answers = {}
        for way in names if r % 2 == 0 else names[::-1]:
            elapsed, answers[way] = timed(way, queries)
            times[way].append(elapsed)
            print(f"round {r + 1}: {way:20s} {elapsed:8.2f} s", flush=True)
        for way in ways:
            same[way] += sum(a == b for a, b in zip(answers[way], answers["per_type"]))
    median = {way: statistics.median(t) for way, t in times.items()}
    n = len(bench.passages)
    total = rounds * len(queries)
    result = {
        "benchmark": "prefix_sharing",
        "model": model,
        "adapter": student.adapter,
        "empty_bias": student.empty_bias,
        "dataset": bench.name,
        "passages": n,
        "types": len(bench.labels),
        "queries": len(queries),
        "threads": threads,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "rounds": rounds,
        "prompt_tokens": {"per_type": full_tokens, "shared": shared_tokens},
        "prefill_ceiling_x": round(full_tokens / shared_tokens, 2),
        "seconds": {way: [round(t, 3) for t in ts] for way, ts in times.items()},
        "median_s": {way: round(t, 3) for way, t in median.items()},
        "passages_per_s": {way: round(n / t, 4) for way, t in median.items()},
        "speedup_x": round(median["per_type"] / median["shared"], 2),
        "identical_answers": round(same["shared"] / total, 4),
        "identical_answers_by_way": {way: round(v / total, 4) for way, v in same.items()},
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"speed-up shared / per-type: {result['speedup_x']}x "
          f"(prompt-token ratio {result['prefill_ceiling_x']}x); "
          f"identical answers {100 * result['identical_answers']:.1f}%")


if __name__ == "__main__":
    typer.run(main)
