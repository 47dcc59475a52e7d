"""Decode steps of the default student with and without padding small products.

On one thread, a prepacked product of 1 or 2 rows is computed as 4 rows
(``spacy_uniner.models.kernels.PAD_ROWS``; 0 turns it off): oneDNN streams the
weight faster that way. Steps with few tokens are those of a passage's last long
answer, when its other queries are done: the tail of every ``nlp.pipe`` batch,
and most steps of a single document.

Each of ``--passages`` Pile passages goes through ``nlp.pipe`` alone (batch of 1,
4 types), once padded and once not, the order alternating from one passage to
the next, after a warm-up. Every decode forward is timed; the medians are
reported by the tokens it fed (rows x tokens per row), with the ratio
unpadded / padded, and the whole passages' seconds both ways. The entities must
be the same both ways. Writes bench/results/decode_step.json.

    python bench/decode_step.py [--passages 32] [--threads 1]
"""

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import typer
from machine import machine_info
from ray_scaling import LABELS, documents

ROOT = Path(__file__).resolve().parents[1]


def main(
    passages: int = typer.Option(32, help="Pile passages, each run alone both ways."),
    threads: int = typer.Option(1, help="torch threads (padding applies on one)."),
    model: str = typer.Option("default", help="Student model."),
    output: Path = typer.Option(ROOT / "bench" / "results" / "decode_step.json"),
) -> None:
    import torch

    from spacy_uniner.cli import build_pipeline
    from spacy_uniner.models import decoding, kernels

    torch.set_num_threads(threads)
    texts = documents(passages + 2, "pile")
    nlp = build_pipeline(LABELS, model, max_new_tokens=64)
    steps = defaultdict(list)  # (padded, tokens fed) -> seconds
    forward = decoding.SharedDecoder._forward

    def timed(self, ids, *args, **kwargs):
        if kwargs.get("prefix") is not None:  # an admission, not a decode step
            return forward(self, ids, *args, **kwargs)
        start = time.perf_counter()
        out = forward(self, ids, *args, **kwargs)
        steps[(kernels.PAD_ROWS > 0, ids.numel())].append(time.perf_counter() - start)
        return out

    decoding.SharedDecoder._forward = timed
    pad_rows = kernels.PAD_ROWS
    whole = {True: [], False: []}
    entities = {True: [], False: []}
    try:
        list(nlp.pipe(texts[passages:], batch_size=1))  # warm-up
        steps.clear()
        for i, text in enumerate(texts[:passages]):
            for padded in (True, False) if i % 2 == 0 else (False, True):
                kernels.PAD_ROWS = pad_rows if padded else 0
                start = time.perf_counter()
                (doc,) = nlp.pipe([text], batch_size=1)
                whole[padded].append(time.perf_counter() - start)
                entities[padded].append([(e.start_char, e.end_char, e.label_) for e in doc.ents])
    finally:
        kernels.PAD_ROWS = pad_rows
        decoding.SharedDecoder._forward = forward
    by_tokens = {}
    for tokens in sorted({t for _, t in steps}):
        padded, plain = steps.get((True, tokens), []), steps.get((False, tokens), [])
        if not (padded and plain):
            continue
        a, b = statistics.median(padded), statistics.median(plain)
        by_tokens[str(tokens)] = {
            "steps": [len(padded), len(plain)],
            "padded_ms": round(a * 1e3, 2),
            "unpadded_ms": round(b * 1e3, 2),
            "unpadded_over_padded": round(b / a, 3),
        }
    result = {
        "benchmark": "decode_step",
        "model": model,
        "threads": threads,
        "passages": passages,
        "labels": LABELS,
        "pad_rows": pad_rows,
        "step_ms_by_tokens": by_tokens,
        "passage_s": {
            "padded": round(sum(whole[True]), 2),
            "unpadded": round(sum(whole[False]), 2),
        },
        "unpadded_over_padded": round(sum(whole[False]) / sum(whole[True]), 3),
        "same_entities": entities[True] == entities[False],
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    for tokens, row in by_tokens.items():
        print(
            f"{tokens:>3} tokens: padded {row['padded_ms']:7.2f} ms, unpadded "
            f"{row['unpadded_ms']:7.2f} ms: {row['unpadded_over_padded']}x ({row['steps']} steps)"
        )
    print(
        f"{passages} passages alone: padded {result['passage_s']['padded']} s, unpadded "
        f"{result['passage_s']['unpadded']} s: {result['unpadded_over_padded']}x; "
        f"entities the same: {result['same_entities']}"
    )


if __name__ == "__main__":
    typer.run(main)
