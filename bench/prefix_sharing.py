"""Prefix-shared decoding vs one full prefill per type query, same student, same prompts.

50 CrossNER passages (UniNER's own CrossNER_AI file, a seeded sample) x all
13 types of the dataset. Each timed round runs both ways on the same prompts,
alternating which goes first; one warm-up round first; the median of the rounds
is reported. Answers are compared query by query (greedy decoding both ways).
Writes bench/results/prefix_sharing.json.

    python bench/prefix_sharing.py [--passages 50] [--rounds 3] [--model default]
"""

import json
import platform
import statistics
import time
from pathlib import Path
from typing import List

import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "benchmarks" / "uniner" / "CrossNER_AI.json"


def main(
    passages: int = typer.Option(50, help="Passages (seeded sample of the file)."),
    rounds: int = typer.Option(3, help="Timed rounds (median reported) after one warm-up."),
    model: str = typer.Option("default", help="Student model (as HFStudent.v1 `name`)."),
    threads: int = typer.Option(2, help="torch threads, pinned."),
    max_new_tokens: int = typer.Option(64, help="Longest reply."),
    batch_size: int = typer.Option(16, help="Queries per generate call (both ways)."),
    data: Path = typer.Option(DATA, help="A UniNER evaluation JSON file."),
    output: Path = typer.Option(ROOT / "bench" / "results" / "prefix_sharing.json"),
) -> None:
    import torch

    from spacy_uniner import prompts as P
    from spacy_uniner.benchmarks import load_uniner_json
    from spacy_uniner.models.decoding import common_prefix_len
    from spacy_uniner.models.hf import HFStudent

    torch.set_num_threads(threads)
    bench = load_uniner_json(data, limit=passages, seed=0)
    queries = [P.render_query(p.text, label) for p in bench.passages for label in bench.labels]
    student = HFStudent(model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        threads=threads).load()
    tok = student.tokenizer
    ids = [tok(q)["input_ids"] for q in queries]
    full_tokens = sum(len(x) for x in ids)
    # Shared: each passage's common token prefix once, plus every query's own tail.
    k = len(bench.labels)
    shared_tokens = full_tokens - sum(
        common_prefix_len(ids[i : i + k]) * (k - 1) for i in range(0, len(ids), k)
    )

    def timed(sharing: bool, prompts: List[str]):
        student.prefix_sharing = sharing
        start = time.perf_counter()
        gens = student.generate(prompts)
        return time.perf_counter() - start, [g.text for g in gens]

    warm = queries[: 2 * len(bench.labels)]
    timed(True, warm)
    timed(False, warm)
    times = {True: [], False: []}
    same = total = 0
    for r in range(rounds):
        answers = {}
        for sharing in ((True, False) if r % 2 == 0 else (False, True)):
            elapsed, answers[sharing] = timed(sharing, queries)
            times[sharing].append(elapsed)
            print(f"round {r + 1}: {'shared  ' if sharing else 'per-type'} {elapsed:8.2f} s")
        same += sum(a == b for a, b in zip(answers[True], answers[False]))
        total += len(queries)
    shared_s = statistics.median(times[True])
    per_type_s = statistics.median(times[False])
    n = len(bench.passages)
    result = {
        "benchmark": "prefix_sharing",
        "model": model,
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
        "shared_s": [round(t, 3) for t in times[True]],
        "per_type_s": [round(t, 3) for t in times[False]],
        "passages_per_s": {"shared": round(n / shared_s, 4), "per_type": round(n / per_type_s, 4)},
        "speedup_x": round(per_type_s / shared_s, 2),
        "identical_answers": round(same / total, 4),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"speed-up shared / per-type: {result['speedup_x']}x "
          f"(prefill ceiling {result['prefill_ceiling_x']}x); "
          f"identical answers {100 * result['identical_answers']:.1f}%")


if __name__ == "__main__":
    typer.run(main)
