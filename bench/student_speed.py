"""Passages per second of the default student: 10 types, 256-token passages, 2 threads,
and the same figure as a fraction of this machine's roofline.

Passages are real Pile passages (../shared/data/pile-ner) cut to exactly 256
student tokens, run through the spaCy component (prefix-shared decoding).
The roofline is measured in the same run: the best 2-thread fp32 matmul
GFLOP/s this machine gives (torch.mm) divided by 2 x parameters x prompt
tokens per passage, where the prompt tokens are those a passage's 10 queries
need prefilled with sharing (the passage prefix once plus each query's own
tail). Decoding is not in the roofline, so the fraction is conservative.
Writes bench/results/student_speed.json.

Every variant in --variants is timed in the same run (alternating), and its
replies are compared with the first one's: a dtype (float32, bfloat16) of the
default student (HFStudent.v2: grounded decoding), optionally with ``:free``
(free greedy decoding: what grounding costs) or ``:int8`` (torch's dynamic int8
quantisation of every linear layer). Lower precision is only worth it where
the answers stay the same.

    python bench/student_speed.py [--passages 8] [--model default]
        [--variants float32,float32:free,bfloat16,float32:int8]
"""

import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import typer
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pile-ner" / "pile_ner_type_subset.jsonl"
LABELS = ["person", "organization", "location", "date", "product", "event",
          "country", "programming language", "law", "disease"]


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul (torch.mm) on ``threads`` threads."""
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


def quantize_int8(student: Any) -> None:
    """Swap ``student``'s model (loaded) for torch's dynamically
    quantised one: every ``nn.Linear`` (the tied LM head too) with int8 weights."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated for torchao
        warnings.simplefilter("ignore")
        student._model = quantize_dynamic(student._model, {torch.nn.Linear}, dtype=torch.qint8)


def main(
    passages: int = typer.Option(8, help="Passages per run."),
    runs: int = typer.Option(5, help="Timed runs (median reported) after one warm-up."),
    model: str = typer.Option("default", help="Student model."),
    threads: int = typer.Option(2, help="torch threads."),
    max_new_tokens: int = typer.Option(96, help="Longest reply."),
    batch_size: int = typer.Option(16, help="Queries decoded together."),
    variants: str = typer.Option(
        "float32,float32:free,bfloat16,float32:int8",
        help="Students to time, comma-separated: a dtype, optionally with ':free' (free "
        "decoding instead of grounded) or ':int8' (dynamic int8 quantisation of the linear "
        "layers); the first is the headline figure and the reference the others' answers are "
        "compared with.",
    ),
    output: Path = typer.Option(ROOT / "bench" / "results" / "student_speed.json"),
) -> None:
    import spacy
    import torch

    from spacy_uniner import prompts as P
    from spacy_uniner.models.decoding import packed_tokens

    torch.set_num_threads(threads)
    names = [d.strip() for d in variants.split(",") if d.strip()]
    pipes = {}
    for name in names:
        dtype, _, option = name.partition(":")
        if option not in ("", "free", "int8"):
            raise typer.BadParameter(f"{name}: unknown option {option!r}", param_hint="--variants")
        if option == "int8" and dtype != "float32":
            raise typer.BadParameter(
                f"{name}: int8 quantises a float32 model", param_hint="--variants"
            )
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe(
            "universal_ner",
            config={
                "labels": LABELS,
                "model": {"@uniner_models": "spacy_uniner.HFStudent.v2", "name": model,
                          "grounded": option != "free",
                          "threads": threads, "max_new_tokens": max_new_tokens,
                          "batch_size": batch_size, "dtype": dtype},
                "store_replies": True,
            },
        )
        pipe.initialize()
        if option == "int8":
            quantize_int8(pipe.model.load())
        pipes[name] = (nlp, pipe)
    pipe = pipes[names[0]][1]
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

    def run(variant: str) -> Tuple[float, List[str]]:
        nlp = pipes[variant][0]
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=len(texts)))
        elapsed = time.perf_counter() - start
        assert all(d.user_data["universal_ner"]["stats"]["windows"] == 1 for d in docs)
        replies = [r["reply"] for d in docs for r in d.user_data["universal_ner"]["replies"]]
        return elapsed, replies

    tok = pipe.model.tokenizer
    prompt_tokens = 0
    for text in texts:
        ids = [tok(P.render_query(text, label))["input_ids"] for label in LABELS]
        prompt_tokens += packed_tokens(ids)
    prompt_tokens /= len(texts)
    params = pipe.model.load().num_parameters
    gflops = matmul_gflops(threads)

    for variant in names:
        run(variant)  # warm-up
    before = {d: dict(pipes[d][1].stats) for d in names}
    times: Dict[str, List[float]] = {d: [] for d in names}
    replies: Dict[str, List[str]] = {}
    for r in range(runs):
        for variant in names if r % 2 == 0 else names[::-1]:
            elapsed, replies[variant] = run(variant)
            times[variant].append(elapsed)
            print(f"run {r + 1}: {variant:18s} {elapsed:7.2f} s", flush=True)
    gflops = max(gflops, matmul_gflops(threads))  # again after the runs: the best seen
    roofline = gflops * 1e9 / (2 * params * prompt_tokens)

    def figures(variant: str) -> Dict[str, Any]:
        stats = pipes[variant][1].stats
        queries = (stats["queries"] - before[variant].get("queries", 0)) / runs
        failures = (stats["parse_failures"] - before[variant].get("parse_failures", 0)) / runs
        median = statistics.median(times[variant])
        reference = replies[names[0]]
        return {
            "variant": variant,
            "runs_s": [round(t, 3) for t in times[variant]],
            "median_s": round(median, 3),
            "passages_per_s": round(len(texts) / median, 4),
            "queries_per_s": round(queries / median, 3),
            "unparseable_reply_rate": round(failures / queries, 3),
            "fraction_of_roofline": round(len(texts) / median / roofline, 3),
            f"same_replies_as_{names[0]}": round(
                sum(a == b for a, b in zip(replies[variant], reference)) / len(reference), 4
            ),
        }

    head = figures(names[0])
    result = {
        "benchmark": "student_speed",
        "model": model,
        "threads": threads,
        "passages": len(texts),
        "tokens_per_passage": 256,
        "labels": LABELS,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "prefix_sharing": pipe.model.prefix_sharing,
        **head,
        "parameters": params,
        "prompt_tokens_per_passage": round(prompt_tokens, 1),
        "matmul_gflops_fp32": round(gflops, 1),
        "roofline_passages_per_s": round(roofline, 4),
        "other_variants": [figures(d) for d in names[1:]],
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    for fig in [head] + result["other_variants"]:
        print(f"{fig['variant']}: {fig['passages_per_s']} passages/s = "
              f"{fig['fraction_of_roofline']} of the fp32 roofline "
              f"({result['roofline_passages_per_s']} passages/s at "
              f"{result['matmul_gflops_fp32']} GFLOP/s); same replies as {names[0]}: "
              f"{100 * fig[f'same_replies_as_{names[0]}']:.1f}%")


if __name__ == "__main__":
    typer.run(main)
