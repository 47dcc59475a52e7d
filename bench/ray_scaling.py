"""Ray Data with 2 actors x 1 thread vs one in-process ``nlp.pipe`` with 1 thread.

The same documents and the same labels both ways, the default student. Two
corpora (``--corpus``):
- ``pile`` (default): the first N distinct Pile passages of Pile-NER (real web
  text, ~1,140 characters each: the corpus UniNER's teacher labelled, and what
  a Ray extraction job is for); writes bench/results/ray_scaling.json;
- ``conll``: CoNLL-2003 test sentences joined 2 at a time (short news snippets,
  ~240 characters each); writes bench/results/ray_scaling-conll.json.
Each round runs both ways, alternating which goes first, after one warm-up of
the in-process pipeline; the median of the rounds is reported.

The in-process time is ``nlp.pipe`` on a pipeline already loaded and warmed up.
Ray is timed two ways, both through ``ray_jobs.extract``'s own code path:
- ``ray_loaded_s``, like for like: from the moment the first actor is ready (its
  model loaded and its full-width warm-up texts answered, as ExtractPredictor does
  at start-up; the in-process pipeline has its warm-up too) until the last batch
  is done; the actors stamp these moments themselves (``StampedPredictor``);
- ``ray_s``, end to end: the whole extraction phase, actor start-up (a fresh
  process importing spaCy, torch and transformers, then loading the model)
  included; Ray's own start-up and reading the input are not.
``speedup_x`` is the like-for-like ratio, ``end_to_end_speedup_x`` the other.

    python bench/ray_scaling.py [--corpus pile|conll] [--docs 200] [--rounds 3]
"""

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import typer
from machine import machine_info

from spacy_uniner.extraction import ExtractPredictor

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CONLL = SHARED / "benchmarks" / "bio" / "crossner" / "conll2003" / "test.txt"
PILE = SHARED / "pile-ner" / "pile_ner_type_subset.jsonl"
LABELS = ["person", "organization", "location", "country"]


class StampedPredictor(ExtractPredictor):
    """ExtractPredictor that appends when it is ready (model loaded, warm-up texts
    answered) and when each batch is done (wall-clock time) to the file ``stamps``,
    one JSON line each."""

    stamps = ""

    def _stamp(self, **fields) -> None:
        with open(self.stamps, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "time": time.time(), **fields}) + "\n")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stamp(event="loaded")

    def __call__(self, batch):
        out = super().__call__(batch)
        self._stamp(event="batch", rows=out.num_rows)
        return out


def loaded_seconds(stamps: Path, documents: int) -> float:
    """RETURNS seconds from the first actor ready to the last batch done."""
    events = [json.loads(line) for line in stamps.read_text(encoding="utf-8").splitlines()]
    loaded = [e["time"] for e in events if e["event"] == "loaded"]
    done = [e for e in events if e["event"] == "batch"]
    assert loaded and sum(e["rows"] for e in done) == documents, (len(loaded), len(done))
    return max(e["time"] for e in done) - min(loaded)


def documents(n: int, corpus: str = "pile", per_doc: int = 2) -> list:
    """RETURNS the first ``n`` documents of ``corpus``: "pile" (distinct Pile-NER
    passages, whole) or "conll" (CoNLL-2003 test sentences joined ``per_doc`` at a time)."""
    if corpus == "pile":
        passages = {}  # the file repeats each passage once per type asked of it
        with PILE.open(encoding="utf-8") as f:
            for line in f:
                passages.setdefault(json.loads(line)["input"], None)
                if len(passages) == n:
                    break
        docs = list(passages)
    elif corpus == "conll":
        from spacy_uniner.evaluation.benchmarks import load_bio

        bench = load_bio(CONLL, column_order="auto", name="conll2003")
        texts = [p.text for p in bench.passages if len(p.text) > 40]
        docs = [" ".join(texts[i : i + per_doc]) for i in range(0, per_doc * n, per_doc)]
        docs = [d for d in docs if d][:n]
    else:
        raise ValueError(f"corpus must be 'pile' or 'conll', not {corpus!r}")
    if len(docs) < n:
        raise ValueError(f"{corpus}: only {len(docs)} documents, {n} asked for")
    return docs


def main(
    corpus: str = typer.Option("pile", help="Documents: 'pile' (Pile passages) or 'conll'."),
    docs: int = typer.Option(200, help="Documents per run."),
    rounds: int = typer.Option(3, help="Timed rounds (median reported)."),
    model: str = typer.Option("default", help="Student model."),
    actors: int = typer.Option(2, help="Ray actors (1 CPU, 1 thread each)."),
    max_new_tokens: int = typer.Option(64, help="Longest reply."),
    output: Path | None = typer.Option(
        None,
        help="Result file (default: bench/results/ray_scaling.json; ray_scaling-conll.json for conll).",
    ),
) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    from spacy_uniner.extraction import ExtractOptions, extract
    from spacy_uniner.pipeline import build_pipeline

    texts = documents(docs, corpus)
    if output is None:
        name = "ray_scaling.json" if corpus == "pile" else f"ray_scaling-{corpus}.json"
        output = ROOT / "bench" / "results" / name
    work = Path(tempfile.mkdtemp(prefix="uniner-ray-scaling-"))
    jsonl = work / "docs.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    torch.set_num_threads(1)
    nlp = build_pipeline(LABELS, model, max_new_tokens=max_new_tokens)
    list(nlp.pipe(texts[:8]))  # warm-up: weights loaded, first calls done

    def in_process() -> float:
        start = time.perf_counter()
        out = list(nlp.pipe(texts, batch_size=16))
        assert len(out) == len(texts)
        return time.perf_counter() - start

    def on_ray(r: int) -> float:
        StampedPredictor.stamps = str(work / f"stamps-{r}.jsonl")
        summary = extract(
            ExtractOptions(
                input=jsonl,
                output=work / f"ray-{r}",
                labels=LABELS,
                model=model,
                actors=actors,
                cpus_per_actor=1,
                batch_size=16,
                max_new_tokens=max_new_tokens,
                id_field="id",
                progress=False,
            ),
            predictor=StampedPredictor,
        )
        assert summary["run"]["ok"] == len(texts), summary["run"]
        times["ray_loaded"].append(loaded_seconds(Path(StampedPredictor.stamps), len(texts)))
        return summary["run"]["extract_seconds"]

    ray.init(
        num_cpus=actors,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(Path(tempfile.gettempdir()) / "ray-bench"),
    )
    times = {"in_process": [], "ray": [], "ray_loaded": []}
    try:
        for r in range(rounds):
            order = ("in_process", "ray") if r % 2 == 0 else ("ray", "in_process")
            for way in order:
                elapsed = in_process() if way == "in_process" else on_ray(r)
                times[way].append(elapsed)
                loaded = (
                    f" ({times['ray_loaded'][-1]:.2f} s with models loaded)" if way == "ray" else ""
                )
                print(f"round {r + 1}: {way:10s} {elapsed:8.2f} s{loaded}")
    finally:
        ray.shutdown()
    one, two = statistics.median(times["in_process"]), statistics.median(times["ray"])
    warm = statistics.median(times["ray_loaded"])
    result = {
        "benchmark": "ray_scaling",
        "model": model,
        "corpus": corpus,
        "documents": len(texts),
        "chars_per_document": round(sum(map(len, texts)) / len(texts), 1),
        "labels": LABELS,
        "max_new_tokens": max_new_tokens,
        "actors": actors,
        "threads": {"in_process": 1, "per_actor": 1},
        "in_process_s": [round(t, 2) for t in times["in_process"]],
        "ray_loaded_s": [round(t, 2) for t in times["ray_loaded"]],
        "ray_s": [round(t, 2) for t in times["ray"]],
        "docs_per_s": {
            "in_process": round(len(texts) / one, 3),
            "ray_loaded": round(len(texts) / warm, 3),
            "ray": round(len(texts) / two, 3),
        },
        "speedup_x": round(one / warm, 2),
        "end_to_end_speedup_x": round(one / two, 2),
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"speed-up Ray ({actors} actors x 1 thread) / in-process (1 thread): "
        f"{result['speedup_x']}x with the models loaded on both sides, "
        f"{result['end_to_end_speedup_x']}x with the actors' start-up counted"
    )


if __name__ == "__main__":
    typer.run(main)
