"""Score a student on the dev suite, the paper's zero-shot suite or any benchmark file.

    python -m eval.benchmark --model default --suite dev --output eval/results/dev
    python -m eval.benchmark --model default --suite zero-shot --limit 5 --output eval/results/x
    python -m eval.benchmark --model PATH --data test.txt --format bio --label-map crossner_ai

The dev suite (held-out Pile-NER passages, CoNLL-2003 dev, BC5CDR dev as plain
questions; ``spacy_uniner.evaluation.benchmarks.DEV_SUITE``) is where choices are made; it
asks a seeded 200 passages per set unless ``--limit`` says otherwise. The
zero-shot suite is test data: run it to report, never to choose.

Writes to ``--output``: ``metrics.json``, ``predictions.jsonl`` (one line per
query), ``results.md`` (the paper's rows beside ours, and where the strict errors come
from), ``f1.png`` and
``cache/`` (finished passages; a rerun with the same settings resumes).
"""

import json
import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

app = typer.Typer(add_completion=False, help=__doc__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = Path(os.environ.get("UNINER_SHARED_DATA", ROOT.parent / "shared" / "data"))


class Suite(str, Enum):
    dev = "dev"
    zero_shot = "zero-shot"


class Format(str, Enum):
    uniner = "uniner"
    bio = "bio"
    bio_rev = "bio-rev"


def model_block(model: str, model_config: Optional[Path], max_new_tokens: Optional[int],
                batch_size: Optional[int], device: Optional[str], dtype: Optional[str],
                threads: Optional[int], adapter: Optional[Path] = None,
                grounded: bool = True) -> Dict[str, Any]:
    """The component's ``model`` block from the options (a JSON file wins over --model)."""
    if model_config is not None:
        block = json.loads(model_config.read_text(encoding="utf8"))
        if "@uniner_models" not in block:
            raise typer.BadParameter("needs an '@uniner_models' key", param_hint="--model-config")
        return block
    block: Dict[str, Any] = {"@uniner_models": "spacy_uniner.HFStudent.v2", "name": model,
                             "grounded": grounded}
    for key, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                       ("device", device), ("dtype", dtype), ("threads", threads),
                       ("adapter", str(adapter) if adapter else None)):
        if value is not None:
            block[key] = value
    return block


def build_nlp(block: Dict[str, Any], max_passage_tokens: int):
    import spacy

    import spacy_uniner  # noqa: F401  (registers the factory and the scorers)

    nlp = spacy.blank("en")
    try:
        nlp.add_pipe("universal_ner", config={
            "model": block,
            "labels": [],
            "store_replies": True,
            "write_ents": False,
            "max_passage_tokens": max_passage_tokens,
            "scorer": {"@scorers": "spacy_uniner.scorer.v2"},
        })
    except (OSError, ValueError) as err:  # a missing student or adapter (checked, not loaded)
        raise typer.BadParameter(str(err), param_hint="--model / --model-config / --adapter") \
            from None
    return nlp


def write_chart(per_column: Dict[str, Dict[str, Any]], path: Path, title: str,
                subtitle: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spacy_uniner.evaluation.benchmarks import PAPER_ZERO_SHOT, ZERO_SHOT

    columns = list(per_column)
    suite = all(c in ZERO_SHOT for c in columns)
    series: Dict[str, List[float]] = {}
    if suite:
        for model, row in PAPER_ZERO_SHOT.items():
            series[f"{model} (paper)"] = [row[c] for c in columns]
    for metric, label in (("uniner", "UniNER string"), ("strict", "strict span"),
                          ("partial", "partial match")):
        series[f"{title}: {label}"] = [100 * per_column[c][metric]["f"] for c in columns]
    labels = columns + ["Avg"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(labels)), 4.2))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        vals = vals + [sum(vals) / len(vals)]
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, vals, width, label=name)
        if not name.endswith("(paper)"):  # ours may be near zero: print the values
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    heading = "Zero-shot NER F1" if suite else "NER F1"
    ax.set_title(heading + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command()
def main(
    model: str = typer.Option(
        "default", help="'default' (the shipped student), 'smollm2-135m-instruct' (its untrained "
        "base) or an HF folder"),
    adapter: Optional[Path] = typer.Option(
        None, exists=True, file_okay=False, help="a LoRA adapter folder over --model"),
    model_config: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="JSON model block (overrides --model)"),
    suite: Optional[Suite] = typer.Option(
        None, help="dev (for choices: Pile-NER dev split, CoNLL-2003 dev, BC5CDR dev) or "
        "zero-shot (the paper's test suite, to report)"),
    only: Optional[str] = typer.Option(
        None, help="with --suite: comma-separated columns, e.g. 'AI,Movie' or 'bc5cdr-dev'"),
    wide: bool = typer.Option(
        False, "--wide", help="--suite dev: ask each BIO set the other sets' types too (absent "
        "by their guidelines), as the zero-shot suite asks many types; sets named *-wide"),
    data: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="a benchmark file"),
    format: Format = typer.Option(
        Format.uniner, "--format",
        help="uniner JSON; bio (column order detected); bio-rev (tag<TAB>token)"),
    label_map: Optional[str] = typer.Option(
        None, help="BIO only: built-in map name (e.g. crossner_ai, mit_movie) or JSON file"),
    name: Optional[str] = typer.Option(None, help="dataset name for --data"),
    limit: Optional[int] = typer.Option(
        None, min=1, help="seeded sample of N passages per dataset (default: all; 200 for "
        "--suite dev)"),
    seed: int = typer.Option(0, help="seed for --limit"),
    output: Path = typer.Option(Path("eval/results/latest"), help="output folder"),
    shared_data: Path = typer.Option(DEFAULT_SHARED, help="the shared data folder (for --suite)"),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="longest reply (HF student)"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="queries the student decodes together"),
    passages_per_batch: int = typer.Option(
        4, min=1, help="passages per pipeline batch / cache write"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, auto (HF student)"),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16, ... (HF student)"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads"),
    grounded: bool = typer.Option(
        True, "--grounded/--free", help="grounded decoding (mentions kept to the passage) or "
        "free greedy decoding (HF student)"),
    max_passage_tokens: int = typer.Option(256, min=1, help="window size in student tokens"),
    overwrite: bool = typer.Option(False, help="discard cached predictions"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Run the benchmark(s) and write metrics, predictions, a table and a chart."""
    from tqdm import tqdm

    from spacy_uniner.evaluation.benchmarks import (
        DEV_LIMIT,
        DEV_SUITE,
        SENTENCES_PER_PASSAGE,
        ZERO_SHOT,
        dev_suite,
        load_benchmark,
        zero_shot_suite,
    )
    from spacy_uniner.evaluation.runner import (
        CacheMismatch,
        averages,
        error_table,
        markdown_table,
        run_benchmark,
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if (suite is None) == (data is None):
        raise typer.BadParameter("give exactly one of --suite or --data")
    if label_map and format == Format.uniner:
        raise typer.BadParameter("--label-map applies to BIO files", param_hint="--label-map")
    if wide and suite != Suite.dev:
        raise typer.BadParameter("--wide is a condition of --suite dev", param_hint="--wide")
    started = time.time()
    if suite is not None:
        known = DEV_SUITE if suite == Suite.dev else ZERO_SHOT
        columns = [c.strip() for c in only.split(",") if c.strip()] if only else None
        unknown = sorted(set(columns or []) - set(known))
        if unknown:
            raise typer.BadParameter(f"unknown columns {unknown}; use {', '.join(known)}",
                                     param_hint="--only")
        if suite == Suite.dev:
            limit = DEV_LIMIT if limit is None else limit
            benches = dev_suite(shared_data, limit=limit, seed=seed, columns=columns, wide=wide)
        else:
            benches = zero_shot_suite(shared_data, limit=limit, seed=seed, columns=columns)
    else:
        try:
            bench = load_benchmark(data, format.value, name=name, label_map=label_map,
                                   limit=limit, seed=seed)
        except (OSError, ValueError) as err:  # the message names the file and the position
            raise typer.BadParameter(str(err), param_hint="--data / --label-map") from None
        benches = {bench.name: bench}
    block = model_block(model, model_config, max_new_tokens, batch_size, device, dtype, threads,
                        adapter, grounded)
    nlp = build_nlp(block, max_passage_tokens)
    output.mkdir(parents=True, exist_ok=True)
    per_column: Dict[str, Dict[str, Any]] = {}
    total = sum(len(b.passages) for b in benches.values())
    # Written aside and moved in place at the end: a run that stops keeps the last
    # finished run's predictions (its finished passages are in cache/).
    partial = output / "predictions.jsonl.partial"
    with tqdm(total=total, unit="passage", disable=quiet, mininterval=2.0) as bar, \
            partial.open("w", encoding="utf8") as pred_fh:
        for column, bench in benches.items():
            bar.set_description(bench.name)
            try:
                result = run_benchmark(
                    nlp, bench, output / "cache" / f"{bench.name}.jsonl", model_config=block,
                    batch_size=passages_per_batch, overwrite=overwrite, progress=bar.update,
                )
            except CacheMismatch as err:  # names the file and the remedy
                partial.unlink()
                raise typer.BadParameter(str(err), param_hint="--output") from None
            per_column[column] = result.metrics
            for line in result.predictions:
                pred_fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    partial.replace(output / "predictions.jsonl")
    totals: Dict[str, int] = {}
    for ds in per_column.values():
        for key, value in ds["counts"].items():
            totals[key] = totals.get(key, 0) + value
    metrics = {
        "run": {
            "model": block,
            "suite": suite.value if suite else None,
            "only": only,
            "data": str(data) if data else None,
            "format": format.value if data else None,
            "label_map": label_map,
            "limit": limit,
            "seed": seed,
            "max_passage_tokens": max_passage_tokens,
            "seconds": round(time.time() - started, 1),  # this invocation (cached work is free)
            "totals": totals,
        },
        "datasets": per_column,
        "averages": averages(per_column),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    title = "ours" if model_config else Path(model).name + (" + adapter" if adapter else "")
    sample = (f"a seeded sample of {limit} passages per dataset (seed {seed})" if limit
              else "all passages")
    if suite == Suite.dev:
        note = (f"F1 × 100 on the dev suite. Ours: `{title}` on {sample} (Pile-NER dev: each "
                f"passage asked only its queried types; CoNLL-2003 and BC5CDR dev: plain "
                f"questions, {SENTENCES_PER_PASSAGE} sentences per passage, CoNLL's MISC not "
                f"asked).")
    else:
        note = (f"F1 × 100. Ours: `{title}` on {sample}. The paper's rows use the full test "
                f"sets and UniNER's string metric (arXiv:2308.03279v2, Tab. 3); compare them "
                f"with our 'UniNER string F1' row.")
    table = markdown_table(per_column, title=title, note=note)
    errors = error_table(per_column)
    if errors:
        table += ("\nWhere the strict errors come from (% of each side; a span is counted under "
                  "the first kind that fits: same offsets and type, same offsets and another "
                  "type, overlapping a span of its type, overlapping only other types, "
                  "overlapping nothing):\n\n" + errors)
    (output / "results.md").write_text(table)
    write_chart(per_column, output / "f1.png", title,
                f"ours: {title}, {sample}" if suite is not None else "")
    typer.echo(table)
    typer.echo(f"wrote {output}/metrics.json, results.md, f1.png, predictions.jsonl")


if __name__ == "__main__":
    app()
