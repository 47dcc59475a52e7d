"""Prefix-shared, continuously batched greedy decoding for a HF causal LM.

UniNER asks one question per entity type about the same passage, and most
answers are a few tokens long. This decoder

- admits a passage's questions with one forward over ``prefix + tail_1 + ...
  + tail_k`` packed in one row (the prefix is the system text and the passage,
  a tail is a question's own last turn), each tail masked to see only the
  prefix and itself and positioned right after the prefix; the last position
  of each tail gives that question's first answer token. Several passages go
  in one padded forward; the leading tokens every passage shares (the system
  text) are computed once and their keys/values reused, and the passage
  tokens' attention leaves out the tails' columns (:func:`split_prefill`);
- gives every question still answering a row on a preallocated key/value slab
  (its prefix's and own tail's keys/values, gathered from the admission
  forward), and decodes all rows one token per step, each step writing one
  column in place (nothing is concatenated);
- hands a finished answer's row to the next question at once (continuous
  batching), so a long answer never holds a batch of short ones hostage;
- optionally drafts each row's next tokens from its own prompt and reply
  (prompt-lookup decoding: answers copy the passage) and checks them all in one
  step, keeping the drafted tokens the model would have chosen itself. A step
  reads all the weights whatever its few rows, so a long answer then takes
  fewer steps.

Rows read only their own columns (the mask) and keep their own positions, so
every question sees exactly the tokens it would see alone and greedy answers
equal per-prompt ``generate`` up to floating-point summation order.
"""

from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence, Tuple

from transformers.cache_utils import Cache, DynamicLayer

from .kernels import additive_mask, masked_attention, onednn_dtypes

Tokens = List[int]


class SlabLayer(DynamicLayer):
    """One layer's keys/values in a preallocated ``(rows, heads, capacity, dim)``
    tensor. A forward writes its new columns at ``length`` in place and attends
    to the view of the columns before and including them."""

    def __init__(self, keys: Any, values: Any, length: int) -> None:
        super().__init__()
        self.slab_keys, self.slab_values = keys, values
        self.length = length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._view()

    def _view(self) -> None:
        self.keys = self.slab_keys[:, :, : self.length]
        self.values = self.slab_values[:, :, : self.length]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        end = self.length + key_states.shape[-2]
        if end > self.slab_keys.shape[2]:
            raise RuntimeError(f"key/value slab full: {end} > {self.slab_keys.shape[2]} columns")
        self.slab_keys[:, :, self.length : end] = key_states
        self.slab_values[:, :, self.length : end] = value_states
        self.length = end
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def attention_shape(config: Any) -> Tuple[int, int, int, int]:
    """A (text) model config's layers, query heads, key/value heads and head size."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, heads, kv_heads, head_dim


def slab_cache(keys: Sequence[Any], values: Sequence[Any], length: int) -> Cache:
    return Cache(layers=[SlabLayer(k, v, length) for k, v in zip(keys, values)])


ATTENTION = "uniner_sdpa"
_FOLD_TOKENS = 16  # query tokens per row up to which grouped heads are folded

# During an admission forward: how many leading query tokens of each row are
# prefix (the rest are question tails), see split_prefill().
_PREFILL_SPLIT: ContextVar[Optional[int]] = ContextVar("uniner_prefill_split", default=None)


def split_prefill(
    attend: Callable[[Any, Any, Any, Any], Any],
    query: Any,
    key: Any,
    value: Any,
    mask: Any,
    prefix: int,
    token_dim: int,
) -> Any:
    """The attention of a packed admission, in two calls: the ``prefix``
    leading query tokens of each row (a passage prefix, right-padded) see only
    the key columns up to the prefix's end, the question tails after them see
    every column. The mask already keeps each part to what it may see, so the
    result equals one call over all keys; the prefix part just skips the tail
    columns, about a fifth of the work. ``attend(query, key, value, mask)``
    runs one part; query ``(batch, heads, q_len, dim)``, keys/values
    ``(batch, kv_heads, kv_len, dim)`` with the queries' own columns last,
    mask additive ``(batch, 1, q_len, kv_len)``. The parts' outputs are joined
    along ``token_dim``."""
    import torch

    q_len = query.shape[2]
    if not 0 < prefix < q_len:
        return attend(query, key, value, mask)
    # the prefix's last column: the key columns before the queries' own, plus the prefix
    end = key.shape[2] - q_len + prefix
    head = attend(
        query[:, :, :prefix], key[:, :, :end], value[:, :, :end], mask[:, :, :prefix, :end]
    )
    tail = attend(query[:, :, prefix:], key, value, mask[:, :, prefix:])
    return torch.cat([head, tail], dim=token_dim)


def _gqa_sdpa_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
) -> Any:
    """transformers' SDPA attention, except for a masked multi-token query over
    grouped key/value heads. A few tokens per row (a decode step with drafts):
    the query heads of one key/value head are folded into one head of
    ``groups x tokens`` queries, as transformers does for one token, so each
    key/value head is read once, not once per query head. More (the masked
    prefill of question tails): SDPA's own grouped-query support, instead of
    first copying every key/value head ``num_key_value_groups`` times."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    q_len = query.shape[2]
    split = _PREFILL_SPLIT.get()
    if (
        split is not None
        and attention_mask is not None
        and q_len > _FOLD_TOKENS
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("dropout")
    ):
        scale = kwargs.get("scaling")

        def attend(q: Any, k: Any, v: Any, m: Any) -> Any:
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=m, scale=scale, enable_gqa=groups > 1
            )

        out = split_prefill(attend, query, key, value, attention_mask, split, token_dim=2)
        return out.transpose(1, 2).contiguous(), None
    if (
        groups > 1
        and attention_mask is not None
        and q_len > 1
        and kwargs.get("position_bias") is None
    ):
        if q_len <= _FOLD_TOKENS:
            batch, heads, _, dim = query.shape
            kv_heads, kv_len = key.shape[1], key.shape[-2]
            mask = attention_mask.expand(batch, 1, q_len, kv_len)[:, :, None]
            out = torch.nn.functional.scaled_dot_product_attention(
                query.reshape(batch, kv_heads, groups * q_len, dim),
                key,
                value,
                attn_mask=mask.expand(batch, 1, groups, q_len, kv_len).reshape(
                    batch, 1, groups * q_len, kv_len
                ),
                scale=kwargs.get("scaling"),
            )
            return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None
        out = torch.nn.functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            scale=kwargs.get("scaling"),
            enable_gqa=True,
        )
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


ONEDNN_ATTENTION = "uniner_onednn"


def _onednn_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
) -> Any:
    """:func:`_gqa_sdpa_forward`, except that a query of more tokens per row
    than a decode step has (the packed prefill's) under an additive mask runs
    on oneDNN (:func:`~spacy_uniner.models.kernels.masked_attention`) where
    the dtype allows."""
    if (
        attention_mask is not None
        and attention_mask.dtype == query.dtype
        and query.shape[2] > _FOLD_TOKENS
        and query.device.type == "cpu"
        and query.dtype in onednn_dtypes()
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("dropout")
    ):
        scaling = kwargs.get("scaling")
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling

        def attend(q: Any, k: Any, v: Any, m: Any) -> Any:
            return masked_attention(q, k, v, m, scale)

        split = _PREFILL_SPLIT.get()
        if split is None:
            return attend(query, key, value, attention_mask), None
        return split_prefill(attend, query, key, value, attention_mask, split, token_dim=1), None
    return _gqa_sdpa_forward(module, query, key, value, attention_mask, **kwargs)


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for name, forward in ((ATTENTION, _gqa_sdpa_forward), (ONEDNN_ATTENTION, _onednn_forward)):
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, forward)
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def _attention(model: Any, onednn: bool = False) -> Iterator[None]:
    """Run the model with :func:`_gqa_sdpa_forward` (or :func:`_onednn_forward`)
    for the duration: the decoder's 4D masks are SDPA masks, whatever attention
    the model was loaded with."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    _register_attention()
    config._attn_implementation = ONEDNN_ATTENTION if onednn else ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


@lru_cache(maxsize=None)
def _cache_argument(model_class: type) -> str:
    """The forward's name for the key/value cache: ``cache`` in recent
    transformers, ``past_key_values`` before (and deprecated since)."""
    import inspect

    try:
        params = inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


@lru_cache(maxsize=None)
def _keeps_masked_logits(model_class: type) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` mask
    (transformers' ``slice_logits_to_keep``): only the positions that need a
    next token then reach the LM head, as one contiguous matrix. Otherwise the
    decoder asks for every position's logits and picks."""
    import inspect

    try:
        return "slice_logits_to_keep" in inspect.getsource(model_class.forward)
    except (OSError, TypeError):
        return False


@dataclass
class _Group:
    """Prompts sharing ``prefix``; ``tails`` are their own remaining tokens."""

    prefix: Tokens
    members: List[int]
    tails: List[Tokens]


@dataclass
class _Common:
    """Keys/values of the leading tokens every prompt shares (the system text
    of the UniNER conversation): computed once, kept in the workspace."""

    model: int  # id() of the model they came from
    tokens: Tuple[int, ...]
    keys: List[Any]  # per layer (1, kv_heads, len(tokens), head_dim)
    values: List[Any]


_MIN_COMMON = 8  # shared leading tokens worth caching across passages


@dataclass
class _Row:
    prompt: int
    position: int  # position id of the last token fed
    ids: Tokens = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    start: int = 0  # first slab column holding this row's tokens
    # Until the row is on the slab: the admission cache and the packed row and
    # columns (prefix + own tail) its keys/values come from.
    source: Optional[Tuple[Any, int, List[int]]] = None


class SharedDecoder:
    """Greedy replies for token-id prompts grouped by a shared prefix.

    slots: rows decoded together. finished(ids) says whether a reply (token
    ids, EOS excluded) is complete; EOS and ``max_new_tokens`` end a reply too.
    ``empty_ids`` / ``empty_bias`` lower those tokens' logits at the first
    answer token. ``prefill_tokens`` bounds the padded tokens of one admission
    forward (one group is always admitted). The slab has room for the widest
    prompt, ``max_new_tokens`` and ``spare_columns`` (default: the widest
    prompt, at least 64) before it is compacted. ``workspace`` (a dict) keeps
    the key/value slabs between calls; with ``common_prefix``, also the
    keys/values of the leading tokens all prompts share (at least 8, e.g. the
    system text every passage starts with), so those are computed once, not
    once per passage. ``draft_tokens`` (0: off) is how many tokens a row may
    draft per step (:func:`lookup_draft`); greedy answers stay those of one
    token per step. ``onednn_attention`` runs the attention of the admission
    forwards on oneDNN (CPU, fp32 or bf16 where the CPU has it;
    :func:`~spacy_uniner.models.kernels.masked_attention`); decode steps stay
    on SDPA. ``lean_forward`` runs the forwards through
    :class:`~spacy_uniner.models.lean.LeanLlama` where the model is one it
    supports (a prepacked Llama on the CPU); otherwise through the model's own
    forward.
    """

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        max_new_tokens: int,
        eos_token_id: Optional[int],
        pad_token_id: int,
        finished: Callable[[Tokens], bool],
        empty_ids: Sequence[int] = (),
        empty_bias: float = 0.0,
        prefill_tokens: int = 4096,
        spare_columns: Optional[int] = None,
        workspace: Optional[dict] = None,
        onednn_attention: bool = False,
        draft_tokens: int = 0,
        lean_forward: bool = True,
        common_prefix: bool = True,
    ) -> None:
        if slots < 1 or max_new_tokens < 1:
            raise ValueError(
                f"slots and max_new_tokens must be positive, got {slots}, {max_new_tokens}"
            )
        if draft_tokens < 0:
            raise ValueError(f"draft_tokens must be 0 or more, got {draft_tokens}")
        self.model = model
        self.slots = slots
        self.max_new_tokens = max_new_tokens
        self.eos = eos_token_id
        self.pad = pad_token_id
        self.finished = finished
        self.empty_ids = list(empty_ids)
        self.empty_bias = empty_bias
        self.prefill_tokens = prefill_tokens
        self.spare_columns = spare_columns
        self._workspace = {} if workspace is None else workspace
        self.onednn_attention = onednn_attention
        self.draft_tokens = draft_tokens
        self.common_prefix = common_prefix
        # decode steps run, tokens drafted, drafted tokens kept (all calls)
        self.stats = {"steps": 0, "drafted": 0, "accepted": 0}
        self._masked_keep = _keeps_masked_logits(type(model))
        self._cache_kwarg = _cache_argument(type(model))
        self.layers, _, self.heads, self.head_dim = attention_shape(model.config)
        self._lean = None
        if lean_forward:
            from .lean import LeanLlama

            if LeanLlama.supports(model):
                self._lean = LeanLlama(model, onednn_attention=onednn_attention)

    def generate(
        self, prompts: Sequence[Tokens], groups: Sequence[Sequence[int]]
    ) -> List[Tuple[Tokens, List[float]]]:
        """(reply token ids, their log-probabilities) per prompt, in prompt order.

        groups: prompt indices sharing a leading run of tokens; every prompt in
        exactly one group.
        """
        import torch

        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        work = []
        for members in groups:
            seqs = [prompts[i] for i in members]
            shared = shared_prefix_len(seqs)
            work.append(
                _Group(list(seqs[0][:shared]), list(members), [list(s[shared:]) for s in seqs])
            )
        # Similar lengths are admitted together: little padding.
        work.sort(key=lambda g: (len(g.prefix), sum(map(len, g.tails))))
        self._prompts = prompts
        self._pending: Deque[_Group] = deque(work)
        self._widest = max((len(g.prefix) + max(map(len, g.tails)) for g in work), default=1)
        self._out: List[Optional[Tuple[Tokens, List[float]]]] = [None] * len(prompts)
        with torch.inference_mode(), _attention(self.model, self.onednn_attention):
            self._common = self._common_prefix(work)
            self._run()
        return self._out  # type: ignore[return-value]

    def _common_prefix(self, work: Sequence[_Group]) -> Optional[_Common]:
        """The keys/values of the leading tokens every group's prefix starts
        with: those kept from an earlier call where they still fit, else
        computed now where at least two groups share ``_MIN_COMMON`` tokens."""
        import torch

        if not work or not self.common_prefix:
            return None
        prefixes = [g.prefix for g in work]
        held = self._workspace.get("common")
        if held is not None and held.model == id(self.model):
            n = len(held.tokens)
            if all(len(p) >= n and tuple(p[:n]) == held.tokens for p in prefixes):
                return held
        if len(work) < 2:
            return None
        n = common_prefix_len(prefixes)
        if n < _MIN_COMMON:
            return None
        tokens = prefixes[0][:n]
        device = next(self.model.parameters()).device
        keys, values = self._slabs("common-tmp", 1, n)
        cache = slab_cache(keys, values, 0)
        causal = torch.ones((n, n), dtype=torch.bool, device=device).tril()
        keep = torch.zeros((1, n), dtype=torch.bool, device=device)
        keep[0, -1] = True
        self._forward(
            torch.tensor([tokens], device=device),
            self._attention_mask(causal[None, None]),
            torch.arange(n, device=device)[None],
            cache,
            keep,
        )
        self._workspace.pop("common-tmp", None)
        common = _Common(
            id(self.model),
            tuple(tokens),
            [k.clone() for k in keys],
            [v.clone() for v in values],
        )
        self._workspace["common"] = common
        return common

    def _forward(
        self,
        input_ids: Any,
        mask: Any,
        positions: Any,
        cache: Cache,
        keep: Any,
        prefix: Optional[int] = None,
    ) -> Any:
        """Logits ``(n, vocab)`` at the ``keep`` positions (a boolean
        ``(rows, tokens)`` tensor), in row-major order. ``mask`` is a 4D
        attention mask: boolean (True: attend) or additive. ``prefix``: in an
        admission, how many leading tokens of each row are its (right-padded)
        passage prefix (see :func:`split_prefill`)."""
        if self._lean is not None:
            return self._lean(input_ids, mask, positions, cache, keep, prefix)
        token = _PREFILL_SPLIT.set(prefix)
        try:
            return self._model_forward(input_ids, mask, positions, cache, keep)
        finally:
            _PREFILL_SPLIT.reset(token)

    def _model_forward(
        self, input_ids: Any, mask: Any, positions: Any, cache: Cache, keep: Any
    ) -> Any:
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kwarg: cache},
            logits_to_keep=keep if self._masked_keep else 0,
        )
        logits = out.logits
        return logits if self._masked_keep else logits[keep]

    def _attention_mask(self, mask: Any) -> Any:
        """A boolean 4D mask as the forward takes it: additive on the CPU, where
        SDPA would convert a boolean one in every layer (and oneDNN attention
        takes only additive ones)."""
        if mask.device.type != "cpu":
            return mask
        return additive_mask(mask, next(self.model.parameters()).dtype)

    # -- the loop --------------------------------------------------------------

    def _slabs(self, name: str, rows: int, columns: int) -> Tuple[List[Any], List[Any]]:
        """Per-layer key and value slabs of at least ``rows x columns``, kept
        between calls under ``name`` (fresh memory costs page faults on every
        touch). Their contents are finite (zeros, or earlier keys/values) and
        only ever read where the mask allows."""
        import torch

        held = self._workspace.get(name)
        param = next(self.model.parameters())
        if held is not None:
            slab = held[0][0]
            fits = (
                slab.shape[0] >= rows and slab.shape[2] >= columns and len(held[0]) == self.layers
            )
            same = (slab.shape[1], slab.shape[3], slab.dtype, slab.device) == (
                self.heads,
                self.head_dim,
                param.dtype,
                param.device,
            )
            held = held if fits and same else None
        if held is None:
            shape = (rows, self.heads, columns, self.head_dim)
            held = (
                [
                    torch.zeros(shape, dtype=param.dtype, device=param.device)
                    for _ in range(self.layers)
                ],
                [
                    torch.zeros(shape, dtype=param.dtype, device=param.device)
                    for _ in range(self.layers)
                ],
            )
            self._workspace[name] = held
        return (
            [k[:rows, :, :columns] for k in held[0]],
            [v[:rows, :, :columns] for v in held[1]],
        )

    def _allocate(self, rows: int, columns: int) -> None:
        import torch

        self._keys, self._values = self._slabs("main", rows, columns)
        self._mask = torch.zeros((rows, columns), dtype=torch.bool, device=self._keys[0].device)

    def _run(self) -> None:
        import torch

        device = next(self.model.parameters()).device
        self._capacity = self.slots
        # Running rows are kept packed in slab rows [0, len(self._rows)): a
        # step computes exactly them.
        self._rows: List[_Row] = []
        # The first columns leave room for the widest prompt; answers are
        # written after them, and the slab is compacted when it is full.
        self._column = self._widest
        spare = self.spare_columns if self.spare_columns is not None else max(self._widest, 64)
        self._allocate(self._capacity, self._widest + self.max_new_tokens + spare)
        self._next = torch.full((self._capacity,), self.pad, dtype=torch.long, device=device)
        self._parked: Deque[_Row] = deque()
        while self._rows or self._parked or self._pending:
            if self._parked:
                self._place()
            elif self._pending and (not self._rows or 2 * len(self._rows) <= self._capacity):
                self._admit()
                self._place()
            if self._rows:
                self._step()

    def _draft(self, row: _Row) -> Tokens:
        """The tokens ``row`` drafts after its next one (see :func:`lookup_draft`),
        never past ``max_new_tokens``."""
        room = min(self.draft_tokens, self.max_new_tokens - len(row.ids) - 1)
        if room < 1:
            return []
        return lookup_draft(self._prompts[row.prompt] + row.ids, room)

    def _step(self) -> None:
        """One token for every running row (more where drafts are kept)."""
        import torch

        self.stats["steps"] += 1
        if self.draft_tokens:
            drafts = [self._draft(row) for row in self._rows]
            if any(drafts):
                self._step_drafted(drafts)
                return
        if self._column >= self._mask.shape[1]:
            self._compact()
        col = self._column
        n = len(self._rows)
        self._mask[:n, col] = True
        device = self._mask.device
        for row in self._rows:
            row.position += 1
        positions = torch.tensor([[r.position] for r in self._rows], device=device)
        logits = self._forward(
            self._next[:n, None],
            self._attention_mask(self._mask[:n, None, None, : col + 1]),
            positions,
            slab_cache([k[:n] for k in self._keys], [v[:n] for v in self._values], col),
            torch.ones((n, 1), dtype=torch.bool, device=device),
        )
        self._column = col + 1
        self._take(logits)

    def _step_drafted(self, drafts: List[Tokens]) -> None:
        """Every row's next token and its drafts in one forward: a row's tokens
        see its earlier columns and each other causally; the model's choice at
        each position is taken while it confirms the draft before it."""
        import torch

        width = 1 + max(map(len, drafts))
        if self._column + width > self._mask.shape[1]:
            self._compact()
        col = self._column
        n = len(self._rows)
        device = self._mask.device
        tokens = torch.full((n, width), self.pad, dtype=torch.long, device=device)
        tokens[:, 0] = self._next[:n]
        keep = torch.zeros((n, width), dtype=torch.bool, device=device)
        for i, draft in enumerate(drafts):
            tokens[i, 1 : 1 + len(draft)] = torch.tensor(draft, dtype=torch.long, device=device)
            keep[i, : 1 + len(draft)] = True
        start = torch.tensor([row.position + 1 for row in self._rows], device=device)
        positions = start[:, None] + torch.arange(width, device=device)
        # Padding after a short draft is fed too (one width for all rows): it is
        # never attended to, and its logits are not taken.
        mask = torch.ones((n, 1, width, col + width), dtype=torch.bool, device=device)
        mask[:, 0, :, :col] = self._mask[:n, None, :col]
        mask[:, 0, :, col:] = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        logits = self._forward(
            tokens,
            self._attention_mask(mask),
            positions,
            slab_cache([k[:n] for k in self._keys], [v[:n] for v in self._values], col),
            keep,
        )
        self._column = col + width
        self._mask[:n, col : col + width] = False
        chosen, picked = self._greedy(logits, first=False)
        done = []
        at = 0
        for slot, (row, draft) in enumerate(zip(self._rows, drafts)):
            self.stats["drafted"] += len(draft)
            for j in range(1 + len(draft)):
                tid = chosen[at + j]
                fed = j + 1  # this row's fed tokens whose keys/values are valid
                going = self._extend(row, tid, picked[at + j])
                if not going or j == len(draft) or tid != draft[j]:
                    break
                self.stats["accepted"] += 1
            at += 1 + len(draft)
            if going:
                self._mask[slot, col : col + fed] = True
                row.position += fed
                self._next[slot] = row.ids[-1]
            else:
                done.append(slot)
        if done:
            self._release(done)

    def _greedy(self, logits: Any, first: bool) -> Tuple[List[int], List[float]]:
        """The greedy token of each logits row and its log-probability
        (``first``: the first answer token, where ``empty_bias`` applies)."""
        import torch

        logits = logits.float()
        if first and self.empty_bias and self.empty_ids:
            logits[:, self.empty_ids] -= self.empty_bias
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logprobs.argmax(dim=-1)
        picked = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
        return chosen.tolist(), picked

    def _extend(self, row: _Row, tid: int, logprob: float) -> bool:
        """Append a chosen token to ``row``'s reply; whether the row goes on
        (False: its reply is complete and recorded)."""
        if tid != self.eos:
            row.ids.append(tid)
            row.logprobs.append(logprob)
        if tid == self.eos or len(row.ids) >= self.max_new_tokens or self.finished(row.ids):
            self._out[row.prompt] = (row.ids, row.logprobs)
            return False
        return True

    def _choose(self, rows: Sequence[_Row], logits: Any, first: bool) -> List[bool]:
        """Append each row's greedy next token (one logits row each); whether
        the row goes on (False: its reply is complete and recorded)."""
        chosen, picked = self._greedy(logits, first)
        return [self._extend(row, tid, lp) for row, tid, lp in zip(rows, chosen, picked)]

    def _take(self, logits: Any) -> None:
        """Next tokens of the slab rows; finished rows leave it."""
        done = []
        for slot, on in enumerate(self._choose(self._rows, logits, first=False)):
            if on:
                self._next[slot] = self._rows[slot].ids[-1]
            else:
                done.append(slot)
        if done:
            self._release(done)

    def _release(self, done: List[int]) -> None:
        """Drop finished rows, moving the last running rows into their places."""
        import torch

        finished = set(done)
        count = len(self._rows) - len(finished)
        holes = [s for s in done if s < count]
        movers = [s for s in range(count, len(self._rows)) if s not in finished]
        if holes:
            device = self._mask.device
            dst = torch.tensor(holes, device=device)
            src = torch.tensor(movers, device=device)
            col = self._column
            for slab in self._keys + self._values:
                used = slab[:, :, :col]
                used.index_copy_(0, dst, used.index_select(0, src))
            self._mask.index_copy_(0, dst, self._mask.index_select(0, src))
            self._next.index_copy_(0, dst, self._next.index_select(0, src))
            for h, m in zip(holes, movers):
                self._rows[h] = self._rows[m]
        del self._rows[count:]

    def _compact(self) -> None:
        """Move the columns still in use to the front of the slab, growing it
        when they fill more than half of it."""
        col = self._column
        used = max(
            [col - r.start for r in self._rows]
            + ([self._widest] if self._pending or self._parked else [1])
        )
        shift = col - used
        keys, values, mask = self._keys, self._values, self._mask
        if used + self.max_new_tokens > mask.shape[1] // 2:
            self._workspace.pop("main", None)  # the old slab is copied from below
            self._allocate(self._capacity, 2 * (used + self.max_new_tokens))
        for old, new in zip(keys + values, self._keys + self._values):
            new[:, :, :used] = old[:, :, shift:col].clone()
        self._mask[:, :used] = mask[:, shift:col].clone()
        for r in self._rows:
            r.start -= shift
        self._column = used

    # -- admitting new prompts -------------------------------------------------

    def _admit(self) -> None:
        """Prefill waiting groups (whole groups, in order, up to
        ``prefill_tokens``) in one packed forward and take every prompt's
        first token; prompts that go on wait (parked) for a slab row.

        Row ``b`` of the forward holds group ``b``: its prefix after the common
        tokens (whose keys/values come from :meth:`_common_prefix`), padding up
        to the widest prefix, then every prompt's own tail. Its cache columns
        are the common tokens, then those tokens in order."""
        import torch

        taken: List[_Group] = []
        width_p = width_t = 0
        while self._pending:
            group = self._pending[0]
            wp = max(width_p, len(group.prefix))
            wt = max(width_t, sum(map(len, group.tails)))
            if taken and (len(taken) + 1) * (wp + wt) > self.prefill_tokens:
                break
            taken.append(self._pending.popleft())
            width_p, width_t = wp, wt
        device = self._mask.device
        common = self._common
        s = len(common.tokens) if common is not None else 0
        total = width_p - s + width_t  # tokens fed per row
        n = len(taken)
        keys, values = self._slabs("admit", n, s + total)
        if common is not None:
            for slab, held in zip(keys + values, common.keys + common.values):
                slab[:, :, :s] = held
        cache = slab_cache(keys, values, s)
        ids = torch.full((n, total), self.pad, dtype=torch.long, device=device)
        positions = torch.zeros((n, total), dtype=torch.long, device=device)
        # Padding attends to itself only (no empty softmax); nothing attends to it.
        mask = torch.zeros((n, total, s + total), dtype=torch.bool, device=device)
        mask[:, :, s:] = torch.eye(total, dtype=torch.bool, device=device)
        keep = torch.zeros((n, total), dtype=torch.bool, device=device)
        rows: List[_Row] = []
        for b, group in enumerate(taken):
            p = len(group.prefix)
            if p > s:
                ids[b, : p - s] = torch.tensor(group.prefix[s:], device=device)
                positions[b, : p - s] = torch.arange(s, p, device=device)
                # token i (column s + i) sees the common tokens and the prefix up to itself
                mask[b, : p - s, :p] = torch.ones(p - s, p, device=device).tril(s).bool()
            at = width_p - s  # fed index of the first tail; its column is s + at
            for member, tail in zip(group.members, group.tails):
                t = len(tail)
                ids[b, at : at + t] = torch.tensor(tail, device=device)
                positions[b, at : at + t] = torch.arange(p, p + t, device=device)
                mask[b, at : at + t, :p] = True
                mask[b, at : at + t, s + at : s + at + t] = (
                    torch.ones(t, t, device=device).tril().bool()
                )
                keep[b, at + t - 1] = True
                rows.append(
                    _Row(
                        prompt=member,
                        position=p + t - 1,
                        source=(cache, b, list(range(p)) + list(range(s + at, s + at + t))),
                    )
                )
                at += t
        logits = self._forward(
            ids, self._attention_mask(mask[:, None]), positions, cache, keep, prefix=width_p - s
        )
        for row, on in zip(rows, self._choose(rows, logits, first=True)):
            if on:
                self._parked.append(row)

    def _place(self) -> None:
        """Move parked rows onto free slab rows: ``[masked] prefix tail``,
        ending at the current column; they decode from the next step."""
        import torch

        free = self._capacity - len(self._rows)
        placing = [self._parked.popleft() for _ in range(min(free, len(self._parked)))]
        if not placing:
            return
        device = self._mask.device
        col = self._column
        first = len(self._rows)
        index = torch.arange(first, first + len(placing), device=device)
        self._mask[index] = False
        # One gather per admission cache the rows come from.
        by_cache: dict = {}
        for k, row in enumerate(placing):
            by_cache.setdefault(id(row.source[0]), []).append(k)
        for ks in by_cache.values():
            cache = placing[ks[0]].source[0]
            width = max(len(placing[k].source[2]) for k in ks)
            if col < width:  # cannot happen: the slab starts at the widest prompt
                raise RuntimeError(f"slab column {col} < prompt width {width}")
            gather = torch.tensor(
                [[c[0]] * (width - len(c)) + c for c in (placing[k].source[2] for k in ks)],
                device=device,
            )
            packed = torch.tensor([placing[k].source[1] for k in ks], device=device)[:, None]
            target = index[ks]
            for layer, main_k, main_v in zip(cache.layers, self._keys, self._values):
                for src, main in ((layer.keys, main_k), (layer.values, main_v)):
                    # (packed rows, heads, cols, dim) -> (prompts, heads, width, dim)
                    main[target, :, col - width : col] = src.transpose(1, 2)[
                        packed, gather
                    ].transpose(1, 2)
        for k, row in enumerate(placing):
            cols = row.source[2]
            self._mask[first + k, col - len(cols) : col] = True
            self._next[first + k] = row.ids[-1]
            row.start = col - len(cols)
            row.source = None  # the admission cache is freed with its last row
            self._rows.append(row)


def lookup_draft(context: Sequence[int], k: int, ngram: int = 3) -> Tokens:
    """Prompt-lookup drafting: the (up to) ``k`` tokens that followed the latest
    earlier occurrence of ``context``'s last tokens, preferring the occurrence
    that matches the most of them (up to ``ngram``); none when the last token
    never occurred before."""
    n = len(context)
    last = context[-1] if n else None
    best, best_len = -1, 0
    for p in range(n - 2, -1, -1):
        if context[p] != last:
            continue
        m = 1
        while m < ngram and p - m >= 0 and context[p - m] == context[n - 1 - m]:
            m += 1
        if m > best_len:
            best, best_len = p, m
            if m == ngram:
                break
    return list(context[best + 1 : best + 1 + k]) if k > 0 and best >= 0 else []


def shared_prefix_len(ids: Sequence[Sequence[int]]) -> int:
    """Tokens a group's prompts share in the decoder: their common prefix, less
    what every prompt needs to keep at least one token of its own."""
    return min(common_prefix_len(ids), min(len(x) for x in ids) - 1)


def packed_tokens(ids: Sequence[Sequence[int]]) -> int:
    """Tokens the decoder prefills for one group: the shared prefix once, plus
    every prompt's own tail."""
    shared = shared_prefix_len(ids)
    return shared + sum(len(x) - shared for x in ids)


def common_prefix_len(ids: Sequence[Sequence[int]]) -> int:
    """Length of the longest run of token ids every sequence starts with."""
    first = ids[0]
    n = min(len(x) for x in ids)
    for k in range(n):
        t = first[k]
        if any(x[k] != t for x in ids):
            return k
    return n
