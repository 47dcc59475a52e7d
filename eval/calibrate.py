"""Choose a student's ``empty_bias`` on labelled data (the dev suite, or your own files).

    python -m eval.calibrate --model smollm2-135m-instruct --adapter training/student/adapter \
        --dev --wide --write training/student/adapter/uniner_student.json
    python -m eval.calibrate --model default --data my_docs.txt --format bio --label-map my.json

``empty_bias`` lowers the student's "no such entity" answer at the first reply
token by that many nats: higher finds more (recall), lower answers ``[]`` more
often (precision). One student run scores every bias in ``--biases``
(spacy_uniner.evaluation.calibration); the one with the best average strict F1 wins.
It also sweeps the component's ``multi_label`` (every type the student gives a
span, or only its best-scoring one; ``--no-multi-label`` keeps it as configured)
and its span-score ``threshold`` (``--thresholds``: drop a mention whose reply
tokens' probability is below it; ``--thresholds 0`` keeps every span).

The student's replies are kept as they come (``--replies``, by default beside
``--output``): an interrupted run resumes, and a rerun with other ``--biases`` or
``--thresholds`` asks the student nothing. ``--write`` records the choice beside
the adapter (``uniner_student.json``), where ``empty_bias = null``,
``multi_label = null`` and ``threshold = null`` (the defaults) pick it up.

``--wide`` chooses on the dev suite's wide condition (each BIO dev set asked all
five dev types, as users and the zero-shot suite ask many), scoring the plain sets
from the same answers; the shipped default was calibrated so. ``--lowercase`` asks
every set in lower case (text and gold), to see how the student reads uncased text;
``--both-cases`` asks every set both as given and in lower case and chooses on the
average of all of them (cased and uncased text weighed alike).
Never calibrate on the zero-shot test suite (CrossNER, MIT): it only reports.
"""

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from eval.benchmark import DEFAULT_SHARED, Format, build_nlp, model_block

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    model: str = typer.Option("default", help="'default', 'smollm2-135m-instruct' or an HF folder"),
    adapter: Optional[Path] = typer.Option(None, exists=True, file_okay=False,
                                           help="a LoRA adapter folder over --model"),
    dev: bool = typer.Option(False, "--dev", help="calibrate on the dev suite"),
    wide: bool = typer.Option(
        False, "--wide",
        help="dev suite: choose on its wide condition (each BIO set also asked the other sets' "
             "types, absent by their guidelines); the plain sets are scored beside it from the "
             "same answers"),
    lowercase: bool = typer.Option(
        False, "--lowercase",
        help="every passage and gold mention in lower case (sets named *-lower): how the "
             "student reads uncased text"),
    both_cases: bool = typer.Option(
        False, "--both-cases",
        help="every set asked as given and in lower case (*-lower); the choice is on the "
             "average of both"),
    data: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                        help="your own labelled file instead (uniner JSON or BIO)"),
    format: Format = typer.Option(Format.bio, "--format", help="format of --data"),
    label_map: Optional[str] = typer.Option(None, help="BIO: built-in map name or JSON file"),
    limit: Optional[int] = typer.Option(None, min=1, help="seeded passages per set (dev: 200)"),
    seed: int = typer.Option(0),
    biases: str = typer.Option(",".join(map(str, (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0,
                                                   5.0))), help="comma-separated nats to try"),
    grounded: bool = typer.Option(True, "--grounded/--free",
                                  help="grounded decoding (HFStudent.v2's default) or free"),
    multi_label: bool = typer.Option(
        True, "--multi-label/--no-multi-label",
        help="also sweep the component's multi_label: every type the student gives a span, or "
             "only its best-scoring one"),
    thresholds: str = typer.Option(
        "0,0.3,0.5,0.7", help="comma-separated span-score thresholds to try (0 to 1)"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads"),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="longest reply"),
    shared_data: Path = typer.Option(DEFAULT_SHARED, help="the shared data folder (dev suite)"),
    write: Optional[Path] = typer.Option(
        None, dir_okay=False, help="record the best settings in this uniner_student.json (merged)"),
    output: Path = typer.Option(Path("eval/results/calibration.json"), dir_okay=False),
    replies: Optional[Path] = typer.Option(
        None, dir_okay=False,
        help="the student's replies, kept as they come (default: beside --output, "
             "*.replies.jsonl): a rerun resumes, and a sweep over other settings asks nothing"),
    overwrite: bool = typer.Option(False, help="ask the student again, replacing --replies"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Sweep empty_bias (with multi_label and threshold), print a table, write the result
    (and optionally the choice)."""
    from tqdm import tqdm

    from spacy_uniner.evaluation.benchmarks import (
        DEV_LIMIT,
        dev_suite,
        load_benchmark,
        lowercased,
        widen_suite,
    )
    from spacy_uniner.component import check_threshold
    from spacy_uniner.evaluation.calibration import replies_cache, sweep_empty_bias

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if dev == (data is not None):
        raise typer.BadParameter("give exactly one of --dev or --data")
    try:
        values = [float(b) for b in biases.split(",") if b.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a list of numbers: {biases!r}", param_hint="--biases")
    try:
        cutoffs = [check_threshold(float(t)) for t in thresholds.split(",") if t.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"{thresholds!r}: {err}", param_hint="--thresholds") from None
    if wide and not dev:
        raise typer.BadParameter("--wide is a condition of the dev suite: give --dev too")
    plain: list = []
    if dev:
        benches = dev_suite(shared_data, limit=DEV_LIMIT if limit is None else limit, seed=seed)
        if wide:  # the plain BIO sets stay beside: their queries are a subset of the wide sets'
            wide_sets = widen_suite(benches, shared_data)
            plain = [name for name in benches if name not in wide_sets]
            benches = {**wide_sets, **{name: benches[name] for name in plain}}
    else:
        try:
            bench = load_benchmark(data, format.value, label_map=label_map, limit=limit, seed=seed)
        except (OSError, ValueError) as err:  # the message names the file and the position
            raise typer.BadParameter(str(err), param_hint="--data / --label-map") from None
        benches = {bench.name: bench}
    if lowercase and both_cases:
        raise typer.BadParameter("give --lowercase or --both-cases, not both")
    if lowercase or both_cases:
        lower = {f"{name}-lower": lowercased(bench) for name, bench in benches.items()}
        lower_plain = [f"{name}-lower" for name in plain]
        if lowercase:
            benches, plain = lower, lower_plain
        else:
            benches, plain = {**benches, **lower}, plain + lower_plain
    block = model_block(model, None, max_new_tokens, None, None, None, threads, adapter, grounded)
    nlp = build_nlp(block, 256)
    replies = replies or output.with_suffix(".replies.jsonl")
    try:
        kept = replies_cache(replies, nlp.get_pipe("universal_ner").model, overwrite=overwrite)
    except ValueError as err:  # written for another student: names the file
        raise typer.BadParameter(str(err), param_hint="--replies") from None
    if kept.records:
        typer.echo(f"{len(kept.records)} replies read from {replies}", err=True)
    total = sum(len(b.passages) for b in benches.values())
    with tqdm(total=total, unit="passage", disable=quiet, mininterval=2.0) as bar:
        result = sweep_empty_bias(nlp, benches, values, progress=bar.update,
                                  multi_labels=(True, False) if multi_label else (),
                                  thresholds=cutoffs, report_only=plain, replies=kept)
    result["model"] = block
    result["replies"] = str(replies)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    names = list(benches)
    typer.echo(f"{result['passages']} passages, {result['queries']} queries; strict F1 x 100"
               + (f"; average of {', '.join(result['averaged'])}" if plain else ""))
    typer.echo("| empty_bias | types per span | threshold | " + " | ".join(names)
               + " | average | partial | UniNER string |")
    typer.echo("|---:|---|---:|" + "---:|" * (len(names) + 3))
    for row in result["rows"]:
        cells = [f"{100 * row['per_set'][n]['strict_f']:.1f}" for n in names]
        per_span = {True: "all", False: "best"}.get(row.get("multi_label"), "as configured")
        cutoff = f"{row['threshold']:g}" if "threshold" in row else "as configured"
        typer.echo(f"| {row['empty_bias']:g} | {per_span} | {cutoff} | " + " | ".join(cells)
                   + f" | {100 * row['strict_f']:.1f} | {100 * row['partial_f']:.1f}"
                   f" | {100 * row['uniner_f']:.1f} |")
    best = result["best"]["empty_bias"]
    chosen = {"empty_bias": best}
    for setting in ("multi_label", "threshold"):
        if setting in result["best"]:
            chosen[setting] = result["best"][setting]
    said = ", ".join(f"{k} = {json.dumps(v)}" for k, v in chosen.items())
    typer.echo(f"best: {said} (wrote {output})")
    if write is not None:
        settings = json.loads(write.read_text(encoding="utf8")) if write.exists() else {}
        settings.update({**chosen, "calibrated_on": result["averaged"],
                         "calibration_passages": result["passages"]})
        write.write_text(json.dumps(settings, indent=2) + "\n")
        typer.echo(f"recorded {said} in {write}")


if __name__ == "__main__":
    app()
