"""Fine-tune a causal LM on instruction data: full or LoRA, one process or Ray Train.

Every default is in :class:`FinetuneConfig`. A finished run (``metrics.json``
present) is skipped unless ``overwrite``; an interrupted one resumes from its
last checkpoint. The output folder records the config and data that made it
(``uniner_training.json``) next to the weights (``adapter/`` for LoRA,
``model/`` for a full fine-tune) and ``metrics.json``.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger("spacy_uniner")


@dataclass
class FinetuneConfig:
    data: str
    output: str
    base_model: str = "smollm2-135m-instruct"
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 3e-4
    warmup_ratio: float = 0.03
    batch_size: int = 4
    grad_accum: int = 4
    max_length: int = 512
    packing: bool = False
    bf16: str = "auto"  # "auto", "true" or "false"
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 10
    threads: Optional[int] = None
    workers: int = 0  # > 0: Ray Train with this many workers
    use_gpu: bool = False
    overwrite: bool = False
    adapter_dtype: str = "bfloat16"
    # LoRA: start from this trained adapter ("default": the shipped student) instead
    # of a fresh one; its own rank, alpha and target modules are kept.
    init_adapter: Optional[str] = None


def bf16_supported(use_gpu: bool) -> bool:
    import torch

    if use_gpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if use_gpu:
        return False
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(is_supported and is_supported())


def _resolve_bf16(cfg: FinetuneConfig) -> bool:
    if cfg.bf16 not in ("auto", "true", "false"):
        raise ValueError(f"bf16 must be auto, true or false, got {cfg.bf16!r}")
    return bf16_supported(cfg.use_gpu) if cfg.bf16 == "auto" else cfg.bf16 == "true"


def _check_data(data_dir: Path) -> Path:
    if not (data_dir / "dataset_info.json").exists() and not (data_dir / "state.json").exists():
        raise FileNotFoundError(f"{data_dir}: not a dataset saved by train.build_data")
    return data_dir


def check_inputs(cfg: FinetuneConfig) -> None:
    """Refuse, naming it, a data folder that train.build_data did not write or a
    base model folder that does not exist, before anything loads."""
    from ..default_student import BASE_MODEL, DEFAULT_MODEL
    from ..weights import check_model_source

    _check_data(Path(cfg.data))
    if cfg.base_model not in (DEFAULT_MODEL, BASE_MODEL):
        try:  # a hub id is left to transformers (downloads are the user's call here)
            check_model_source(cfg.base_model, allow_download=True)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"base model: {err}") from None


def load_examples(cfg: FinetuneConfig, tokenizer: Any) -> Tuple[Any, Dict[str, Any]]:
    """The tokenised training set and its statistics."""
    import datasets

    from .data import iter_conversations
    from .encoding import encode_all, pack

    data_dir = _check_data(Path(cfg.data))
    dataset = datasets.load_from_disk(str(data_dir))
    examples, stats = encode_all(tokenizer, list(iter_conversations(dataset)), cfg.max_length)
    if cfg.packing:
        examples = pack(examples, cfg.max_length)
        stats["packed_sequences"] = len(examples)
    if not examples:
        raise ValueError(f"{data_dir}: no training example fits max_length={cfg.max_length}")
    for example in examples:
        example["length"] = len(example["input_ids"])
    return datasets.Dataset.from_list(examples).shuffle(seed=cfg.seed), dict(stats)


def build_trainer(cfg: FinetuneConfig, callbacks: Optional[List[Any]] = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from ..default_student import resolve_model
    from .encoding import Collator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = resolve_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if cfg.init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(start_adapter(cfg)), is_trainable=True)
    elif cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.target_modules,
            ),
        )
    train_set, data_stats = load_examples(cfg, tokenizer)
    use_bf16 = _resolve_bf16(cfg)
    args = TrainingArguments(
        output_dir=str(Path(cfg.output) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        bf16=use_bf16,
        use_cpu=not cfg.use_gpu,
        seed=cfg.seed,
        report_to=[],
        remove_unused_columns=False,
        # Batches of similar length: far less padding on CPU, where every token costs.
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=callbacks,
    )
    return trainer, tokenizer, {**data_stats, "bf16": use_bf16, "base_path": base}


def start_adapter(cfg: FinetuneConfig) -> Path:
    """The adapter ``cfg.init_adapter`` names, checked against the run: LoRA only, and
    trained on the base this run trains (as its ``adapter_config.json`` names it)."""
    from ..default_student import DEFAULT_MODEL, default_adapter

    if not cfg.lora:
        raise ValueError(f"init_adapter={cfg.init_adapter!r} continues a LoRA adapter: "
                         f"it cannot start a full fine-tune")
    path = default_adapter() if cfg.init_adapter == DEFAULT_MODEL else Path(cfg.init_adapter)
    if path is None:
        raise FileNotFoundError("init_adapter='default': this install ships no default adapter")
    config_file = path / "adapter_config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: not a LoRA adapter folder (no adapter_config.json)")
    trained_on = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if trained_on not in (None, cfg.base_model):
        raise ValueError(f"{path} was trained on base {trained_on!r}, not on "
                         f"{cfg.base_model!r}: give --base-model {trained_on}")
    return path


def _last_checkpoint(output: Path) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    folder = output / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def save_result(cfg: FinetuneConfig, trainer: Any, tokenizer: Any, info: Dict[str, Any],
                train_metrics: Dict[str, Any]) -> Path:
    import torch

    output = Path(cfg.output)
    model = trainer.model
    if cfg.lora:
        target = output / "adapter"
        if cfg.adapter_dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        # Name the base as the user gave it, not the local folder it was loaded from
        # (a path on this machine means nothing where the adapter is shipped).
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = cfg.base_model
        model.save_pretrained(target)
    else:
        target = output / "model"
        model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    data_dir = Path(cfg.data)
    data_stats = data_dir / "stats.json"
    config = asdict(cfg)
    started_from = None
    if cfg.init_adapter:
        from ..default_student import file_sha256

        # The rank and the rest come from the adapter the run started from: record
        # those, and which adapter that was ('default' names another one once shipped).
        lora = next(iter(trainer.model.peft_config.values()))
        config.update(lora_r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                      target_modules=sorted(lora.target_modules))
        start = start_adapter(cfg)
        started_from = {"path": str(start),
                        "sha256": file_sha256(start / "adapter_model.safetensors")}
    record = {
        "config": config,
        "init_adapter": started_from,
        "base_model": cfg.base_model,
        "base_path": info.get("base_path"),
        "data": str(data_dir),
        "data_stats": json.loads(data_stats.read_text()) if data_stats.exists() else None,
        "encoding": {k: v for k, v in info.items() if k not in ("base_path",)},
    }
    (output / "uniner_training.json").write_text(json.dumps(record, indent=2) + "\n")
    (output / "metrics.json").write_text(json.dumps(train_metrics, indent=2) + "\n")
    return target


def finetune(cfg: FinetuneConfig) -> Dict[str, Any]:
    """Train in this process (or on Ray Train if ``cfg.workers``); returns the metrics."""
    output = Path(cfg.output)
    metrics_path = output / "metrics.json"
    if metrics_path.exists() and not cfg.overwrite:
        logger.warning("%s exists: the run is done (use overwrite to train again)", metrics_path)
        return json.loads(metrics_path.read_text())
    if cfg.init_adapter:
        start_adapter(cfg)  # refused before anything loads
    check_inputs(cfg)
    output.mkdir(parents=True, exist_ok=True)
    if cfg.workers > 0:
        return _finetune_ray(cfg)
    trainer, tokenizer, info = build_trainer(cfg)
    start = time.perf_counter()
    resume = None if cfg.overwrite else _last_checkpoint(output)
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - start
    metrics = _metrics(cfg, result.metrics, info, elapsed, trainer, resumed_from=resume)
    save_result(cfg, trainer, tokenizer, info, metrics)
    return metrics


def _metrics(cfg: FinetuneConfig, train_metrics: Dict[str, Any], info: Dict[str, Any],
             elapsed: float, trainer: Any, resumed_from: Optional[str] = None) -> Dict[str, Any]:
    steps = trainer.state.global_step
    tokens_seen = info.get("tokens", 0) * (steps * cfg.batch_size * cfg.grad_accum) / max(
        info.get("examples", 1), 1
    )
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "train_loss": train_metrics.get("train_loss"),
        "first_logged_loss": history[0]["loss"] if history else None,
        "last_logged_loss": history[-1]["loss"] if history else None,
        "steps": steps,
        "epochs": trainer.state.epoch,
        "wall_s": round(elapsed, 1),
        "approx_tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed else None,
        "examples": info.get("examples"),
        "tokens_per_epoch": info.get("tokens"),
        "loss_tokens_per_epoch": info.get("loss_tokens"),
        "bf16": info.get("bf16"),
        "lora": cfg.lora,
        "resumed_from": resumed_from,
        "workers": cfg.workers,
    }


def _ray_train_loop(config: Dict[str, Any]) -> None:
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    cfg = FinetuneConfig(**config)
    trainer, tokenizer, info = build_trainer(cfg, callbacks=[RayTrainReportCallback()])
    trainer = prepare_trainer(trainer)
    start = time.perf_counter()
    result = trainer.train()
    if ray.train.get_context().get_world_rank() == 0:
        metrics = _metrics(cfg, result.metrics, info, time.perf_counter() - start, trainer)
        save_result(cfg, trainer, tokenizer, info, metrics)


def _finetune_ray(cfg: FinetuneConfig) -> Dict[str, Any]:
    """Ray Train ``TorchTrainer`` over ``cfg.workers`` workers (GPUs with ``use_gpu``).

    The output folder must be reachable by worker 0 (shared storage on a cluster).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init()
    config = asdict(cfg)
    config["output"] = str(Path(cfg.output).resolve())
    config["data"] = str(Path(cfg.data).resolve())
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(
            name="uniner-finetune", storage_path=str(Path(config["output"]) / "ray")
        ),
    )
    trainer.fit()
    metrics_path = Path(config["output"]) / "metrics.json"
    if not metrics_path.exists():
        raise RuntimeError(f"Ray Train finished but wrote no {metrics_path}")
    return json.loads(metrics_path.read_text())
