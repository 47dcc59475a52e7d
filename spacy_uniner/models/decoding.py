"""Prefix-shared, continuously batched greedy decoding for a HF causal LM.

UniNER asks one question per entity type about the same passage, and most
answers are a few tokens long. This decoder

- admits a passage's questions with one forward over ``prefix + tail_1 + ...
  + tail_k`` packed in one row (the prefix is the system text and the passage,
  a tail is a question's own last turn), each tail masked to see only the
  prefix and itself and positioned right after the prefix; the last position
  of each tail gives that question's first answer token. Several passages go
  in one padded forward;
- gives every question still answering a row on a preallocated key/value slab
  (its prefix's and own tail's keys/values, gathered from the admission
  forward), and decodes all rows one token per step, each step writing one
  column in place (nothing is concatenated);
- hands a finished answer's row to the next question at once (continuous
  batching), so a long answer never holds a batch of short ones hostage.

Rows read only their own columns (the mask) and keep their own positions, so
every question sees exactly the tokens it would see alone and greedy answers
equal per-prompt ``generate`` up to floating-point summation order. Every
forward is the model's own, through its public arguments: a 4D additive
attention mask, position ids, a :class:`~transformers.Cache` and a boolean
``logits_to_keep``.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from transformers import Cache, DynamicLayer

Tokens = List[int]
# choose(prompt index, reply so far, log-probabilities over the vocabulary) -> next token
Chooser = Callable[[int, Tokens, Any], int]


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


def additive_mask(mask: Any, dtype: Any) -> Any:
    """A boolean mask (True: attend) as the additive one every attention
    implementation takes: 0 where attended, the dtype's minimum elsewhere."""
    import torch

    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


@dataclass
class _Group:
    """Prompts sharing ``prefix``; ``tails`` are their own remaining tokens."""

    prefix: Tokens
    members: List[int]
    tails: List[Tokens]


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
    answer token. ``choose`` (optional) picks each next token from the
    log-probabilities instead of the argmax (e.g. grounded decoding); the
    log-probability recorded is the chosen token's. ``prefill_tokens`` bounds
    the padded tokens of one admission forward (one group is always admitted).
    The slab has room for the widest prompt, ``max_new_tokens`` and
    ``spare_columns`` (default: the widest prompt, at least 64) before it is
    compacted. ``workspace`` (a dict) keeps the key/value slabs between calls.
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
        choose: Optional[Chooser] = None,
        prefill_tokens: int = 4096,
        spare_columns: Optional[int] = None,
        workspace: Optional[dict] = None,
    ) -> None:
        if slots < 1 or max_new_tokens < 1:
            raise ValueError(
                f"slots and max_new_tokens must be positive, got {slots}, {max_new_tokens}"
            )
        self.model = model
        self.slots = slots
        self.max_new_tokens = max_new_tokens
        self.eos = eos_token_id
        self.pad = pad_token_id
        self.finished = finished
        self.empty_ids = list(empty_ids)
        self.empty_bias = empty_bias
        self.choose = choose
        self.prefill_tokens = prefill_tokens
        self.spare_columns = spare_columns
        self._workspace = {} if workspace is None else workspace
        self.layers, _, self.heads, self.head_dim = attention_shape(model.config)
        param = next(model.parameters())
        self._dtype, self._device = param.dtype, param.device

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
        self._pending: Deque[_Group] = deque(work)
        self._widest = max((len(g.prefix) + max(map(len, g.tails)) for g in work), default=1)
        self._out: List[Optional[Tuple[Tokens, List[float]]]] = [None] * len(prompts)
        with torch.inference_mode():
            self._run()
        return self._out  # type: ignore[return-value]

    def _forward(self, input_ids: Any, mask: Any, positions: Any, cache: Cache, keep: Any) -> Any:
        """Logits ``(n, vocab)`` at the ``keep`` positions (a boolean
        ``(rows, tokens)`` tensor), in row-major order. ``mask`` is a boolean
        4D attention mask (True: attend)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=additive_mask(mask, self._dtype),
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        return out.logits

    # -- the loop --------------------------------------------------------------

    def _slabs(self, name: str, rows: int, columns: int) -> Tuple[List[Any], List[Any]]:
        """Per-layer key and value slabs of at least ``rows x columns``, kept
        between calls under ``name`` (fresh memory costs page faults on every
        touch). Their contents are finite (zeros, or earlier keys/values) and
        only ever read where the mask allows."""
        import torch

        held = self._workspace.get(name)
        if held is not None:
            slab = held[0][0]
            fits = (
                slab.shape[0] >= rows and slab.shape[2] >= columns and len(held[0]) == self.layers
            )
            same = (slab.shape[1], slab.shape[3], slab.dtype, slab.device) == (
                self.heads,
                self.head_dim,
                self._dtype,
                self._device,
            )
            held = held if fits and same else None
        if held is None:
            shape = (rows, self.heads, columns, self.head_dim)
            held = tuple(
                [torch.zeros(shape, dtype=self._dtype, device=self._device) for _ in range(self.layers)]
                for _ in range(2)
            )
            self._workspace[name] = held
        return (
            [k[:rows, :, :columns] for k in held[0]],
            [v[:rows, :, :columns] for v in held[1]],
        )

    def _allocate(self, rows: int, columns: int) -> None:
        import torch

        self._keys, self._values = self._slabs("main", rows, columns)
        self._mask = torch.zeros((rows, columns), dtype=torch.bool, device=self._device)

    def _run(self) -> None:
        import torch

        self._capacity = self.slots
        # Running rows are kept packed in slab rows [0, len(self._rows)): a
        # step computes exactly them.
        self._rows: List[_Row] = []
        # The first columns leave room for the widest prompt; answers are
        # written after them, and the slab is compacted when it is full.
        self._column = self._widest
        spare = self.spare_columns if self.spare_columns is not None else max(self._widest, 64)
        self._allocate(self._capacity, self._widest + self.max_new_tokens + spare)
        self._next = torch.full((self._capacity,), self.pad, dtype=torch.long, device=self._device)
        self._parked: Deque[_Row] = deque()
        while self._rows or self._parked or self._pending:
            if self._parked:
                self._place()
            elif self._pending and (not self._rows or 2 * len(self._rows) <= self._capacity):
                self._admit()
                self._place()
            if self._rows:
                self._step()

    def _step(self) -> None:
        """One token for every running row."""
        import torch

        if self._column >= self._mask.shape[1]:
            self._compact()
        col = self._column
        n = len(self._rows)
        self._mask[:n, col] = True
        for row in self._rows:
            row.position += 1
        positions = torch.tensor([[r.position] for r in self._rows], device=self._device)
        logits = self._forward(
            self._next[:n, None],
            self._mask[:n, None, None, : col + 1],
            positions,
            slab_cache([k[:n] for k in self._keys], [v[:n] for v in self._values], col),
            torch.ones((n, 1), dtype=torch.bool, device=self._device),
        )
        self._column = col + 1
        done = []
        for slot, on in enumerate(self._choose(self._rows, logits, first=False)):
            if on:
                self._next[slot] = self._rows[slot].ids[-1]
            else:
                done.append(slot)
        if done:
            self._release(done)

    def _choose(self, rows: Sequence[_Row], logits: Any, first: bool) -> List[bool]:
        """Append each row's next token (one logits row each; ``first``: the
        first answer token, where ``empty_bias`` applies); whether the row goes
        on (False: its reply is complete and recorded)."""
        import torch

        logits = logits.float()
        if first and self.empty_bias and self.empty_ids:
            logits[:, self.empty_ids] -= self.empty_bias
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.choose is None:
            chosen = logprobs.argmax(dim=-1).tolist()
        else:
            chosen = [self.choose(r.prompt, r.ids, lp) for r, lp in zip(rows, logprobs)]
        picked = logprobs[torch.arange(len(chosen)), torch.tensor(chosen)].tolist()
        going = []
        for row, tid, lp in zip(rows, chosen, picked):
            if tid != self.eos:
                row.ids.append(tid)
                row.logprobs.append(lp)
            done = tid == self.eos or len(row.ids) >= self.max_new_tokens or self.finished(row.ids)
            if done:
                self._out[row.prompt] = (row.ids, row.logprobs)
            going.append(not done)
        return going

    def _release(self, done: List[int]) -> None:
        """Drop finished rows, moving the last running rows into their places."""
        import torch

        finished = set(done)
        count = len(self._rows) - len(finished)
        holes = [s for s in done if s < count]
        movers = [s for s in range(count, len(self._rows)) if s not in finished]
        if holes:
            dst = torch.tensor(holes, device=self._device)
            src = torch.tensor(movers, device=self._device)
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

        Row ``b`` of the forward holds group ``b``: its prefix, padding up to
        the widest prefix, then every prompt's own tail."""
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
        device = self._device
        total = width_p + width_t
        n = len(taken)
        keys, values = self._slabs("admit", n, total)
        cache = slab_cache(keys, values, 0)
        ids = torch.full((n, total), self.pad, dtype=torch.long, device=device)
        positions = torch.zeros((n, total), dtype=torch.long, device=device)
        # Padding attends to itself only (no empty softmax); nothing attends to it.
        mask = torch.eye(total, dtype=torch.bool, device=device).repeat(n, 1, 1)
        keep = torch.zeros((n, total), dtype=torch.bool, device=device)
        rows: List[_Row] = []
        for b, group in enumerate(taken):
            p = len(group.prefix)
            ids[b, :p] = torch.tensor(group.prefix, device=device)
            positions[b, :p] = torch.arange(p, device=device)
            mask[b, :p, :p] = torch.ones(p, p, dtype=torch.bool, device=device).tril()
            at = width_p  # column of the first tail
            for member, tail in zip(group.members, group.tails):
                t = len(tail)
                ids[b, at : at + t] = torch.tensor(tail, device=device)
                positions[b, at : at + t] = torch.arange(p, p + t, device=device)
                mask[b, at : at + t, :p] = True
                mask[b, at : at + t, at : at + t] = torch.ones(
                    t, t, dtype=torch.bool, device=device
                ).tril()
                keep[b, at + t - 1] = True
                rows.append(
                    _Row(
                        prompt=member,
                        position=p + t - 1,
                        source=(cache, b, list(range(p)) + list(range(at, at + t))),
                    )
                )
                at += t
        logits = self._forward(ids, mask[:, None], positions, cache, keep)
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
        device = self._device
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
