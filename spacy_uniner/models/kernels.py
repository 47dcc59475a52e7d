"""CPU linear layers with their weights prepacked for oneDNN.

torch runs an fp32 ``nn.Linear`` on x86 CPUs through MKL's sgemm, which on
some CPUs (AMD ones in particular) takes a slow code path: on a 2-core AMD EPYC
with AVX-512 a 2048-cube fp32 matmul reaches 180-212 GFLOP/s through MKL and
405-487 through oneDNN, and the small-batch products of decoding are 3x
faster. oneDNN ships with every x86 torch wheel; torch's own graph compiler
uses these very ops (``mkldnn._reorder_linear_weight`` / ``_linear_pointwise``) when it
freezes a model for CPU. Prepacking once at load time keeps each layer's weight
in oneDNN's blocked layout, so no call reorders it.

The packed weight replaces the dense one (no extra memory), except where the
weight is shared (an LM head tied to the input embeddings keeps the embedding
and holds a packed copy). Results equal ``nn.Linear`` up to floating-point
summation order (and the SiLU's rounding, where a gated MLP is fused).
"""

import logging
from collections import Counter
from functools import lru_cache
from typing import Any, Dict, List, Tuple

logger = logging.getLogger("spacy_uniner")


def onednn_available() -> bool:
    """Whether this torch can run prepacked oneDNN linears on the CPU."""
    import torch

    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@lru_cache(maxsize=None)
def packed_linear_class() -> type:
    """The :class:`PackedLinear` module class (built on first use: torch is
    imported lazily)."""
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` (inference only) over a oneDNN-prepacked weight."""

        def __init__(self, linear: Any, keep_weight: bool) -> None:
            super().__init__()
            self.in_features = linear.in_features
            self.out_features = linear.out_features
            weight = linear.weight.detach()
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            # A shared (tied) weight stays reachable for whoever else uses it.
            self.weight = linear.weight if keep_weight else None
            self.bias = linear.bias

        def check(self, x: Any) -> None:
            if x.dtype != self.packed.dtype:
                raise TypeError(
                    f"PackedLinear holds {self.packed.dtype} weights, got {x.dtype} input"
                )

        def forward(self, x: Any, residual: Any = None) -> Any:
            """``linear(x)``, or ``residual + linear(x)`` with oneDNN adding the
            residual inside the product."""
            self.check(x)
            if residual is None:
                return packed_product(x, self.packed, self.bias, "none")
            return packed_product(x, self.packed, self.bias, "add", residual)

        def extra_repr(self) -> str:
            return (
                f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, onednn_prepacked=True"
            )

    return PackedLinear


# On one thread, oneDNN streams a prepacked fp32 weight from memory faster for 4
# input rows than for 1 or 2: the default student's decode steps of 1 and 2 tokens took
# 60.4 and 68.8 ms, padded 56.3 and 57.1 (2-core AMD EPYC; bench/decode_step.py).
# On two threads it made no difference (timed by hand: the benchmark cannot pad
# there). The rows added are zeros; the real rows' results are the same.
# PAD_ROWS = 0 turns it off.
PAD_ROWS = 4


def packed_product(x: Any, packed: Any, bias: Any, op: str, other: Any = None) -> Any:
    """``x @ W.T + bias`` through oneDNN on a prepacked weight, then ``op``:
    ``"none"``, ``"swish"`` (SiLU), or with ``other`` (shaped as the result)
    ``"add"`` / ``"mul"`` applied inside the product. On one thread, 1 or 2 fp32
    rows are computed as :data:`PAD_ROWS` (the others zeros)."""
    import torch

    linear = torch.ops.mkldnn._linear_pointwise
    lead, rows = x.shape[:-1], x.numel() // x.shape[-1]
    small = 0 < rows <= 2 and x.dtype == torch.float32 and torch.get_num_threads() == 1
    pad = PAD_ROWS - rows if small else 0
    if pad > 0:
        x, other = (
            None if t is None else torch.cat([t.reshape(rows, -1), t.new_zeros(pad, t.shape[-1])])
            for t in (x, other)
        )
    if other is None:
        out = linear(x, packed, bias, op, [], "")
    else:
        out = linear.binary(x, other, packed, bias, op)
    return out[:rows].reshape(*lead, out.shape[-1]) if pad > 0 else out


@lru_cache(maxsize=None)
def onednn_dtypes() -> Tuple[Any, ...]:
    """The dtypes oneDNN runs fast here: fp32, and bf16 where the CPU has bf16
    instructions (elsewhere oneDNN's bf16 is emulated, and slow)."""
    import torch

    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (torch.float32, torch.bfloat16)
    return (torch.float32,)


def prepack_linears(model: Any) -> int:
    """Replace every ``nn.Linear`` of ``model`` (on the CPU, in one of
    :func:`onednn_dtypes`) by a :class:`PackedLinear`; RETURNS how many were
    replaced. Raises RuntimeError when this torch has no oneDNN (see
    :func:`onednn_available`)."""
    import torch

    if not onednn_available():
        raise RuntimeError("this torch build has no oneDNN (mkldnn) linear kernels")
    packable = onednn_dtypes()
    cls = packed_linear_class()
    # Weights used by more than one module (tied embeddings) stay in place.
    users = Counter(
        id(param) for module in model.modules() for param in module.parameters(recurse=False)
    )
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            w = child.weight
            if w.device.type != "cpu" or w.dtype not in packable:
                continue
            setattr(parent, name, cls(child, keep_weight=users[id(w)] > 1))
            replaced += 1
    fused = fuse_gated_mlps(model)
    logger.info("Prepacked %d linear layers for oneDNN (%d gated MLPs fused)", replaced, fused)
    return replaced


_GATED = "self.act_fn(self.gate_proj(x)) * self.up_proj(x)"


def _is_silu(act: Any) -> bool:
    import torch

    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


@lru_cache(maxsize=None)
def _gated_forward(module_class: type) -> bool:
    """Whether ``module_class.forward`` is ``down(act(gate(x)) * up(x))``."""
    import inspect

    try:
        return _GATED in inspect.getsource(module_class.forward)
    except (OSError, TypeError):
        return False


def fuse_gated_mlps(model: Any) -> int:
    """Give every prepacked SiLU-gated MLP (``down(silu(gate(x)) * up(x))``, as
    in Llama, Mistral, Qwen2 ...) a forward where oneDNN applies the SiLU and
    the product inside the gate and up products, instead of two more passes
    over the widest activations. RETURNS how many were fused."""
    from types import MethodType

    cls = packed_linear_class()
    fused = 0
    for module in model.modules():
        parts = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if not (
            all(isinstance(p, cls) for p in parts)
            and _is_silu(getattr(module, "act_fn", None))
            and _gated_forward(type(module))  # some other arrangement: left as it is
        ):
            continue
        module.forward = MethodType(gated_mlp, module)
        fused += 1
    return fused


def gated_mlp(mlp: Any, x: Any, residual: Any = None) -> Any:
    """``down(silu(gate(x)) * up(x))`` of a prepacked SiLU-gated MLP (see
    :func:`fuse_gated_mlps`), oneDNN applying the SiLU and the product inside
    the gate and up products; with ``residual``, ``residual + ...`` added
    inside the down product."""
    gate, up = mlp.gate_proj, mlp.up_proj
    gate.check(x)
    g = packed_product(x, gate.packed, gate.bias, "swish")
    h = packed_product(x, up.packed, up.bias, "mul", g)
    return mlp.down_proj(h, residual)


def additive_mask(mask: Any, dtype: Any) -> Any:
    """A boolean attention mask (True: attend) as the additive one
    :func:`masked_attention` takes: 0 where attended, -inf elsewhere."""
    import torch

    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, float("-inf")
    )


def masked_attention(query: Any, key: Any, value: Any, mask: Any, scale: float) -> Any:
    """``softmax(query @ key^T * scale + mask) @ value`` with both products on
    oneDNN, for CPU tensors in one of :func:`onednn_dtypes`.

    query: ``(batch, heads, q_len, dim)``; key, value: ``(batch, kv_heads,
    kv_len, dim)``, ``heads`` a multiple of ``kv_heads`` (grouped-query
    attention: the query heads of one key/value head go through its products
    as one matrix, nothing is repeated); mask: additive, ``(batch or 1, 1,
    q_len, kv_len)`` (see :func:`additive_mask`), every query row attending to
    at least one key. RETURNS ``(batch, q_len, heads, dim)``, contiguous.
    """
    import torch

    linear = torch.ops.mkldnn._linear_pointwise
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if heads % kv_heads or mask.dtype != query.dtype:
        raise ValueError(
            f"masked_attention: {heads} query heads over {kv_heads} key/value heads, "
            f"{mask.dtype} mask for {query.dtype} queries"
        )
    group = heads // kv_heads
    query = query * scale
    # Both products' weights must be dense: oneDNN takes a slow path on strided ones.
    key = key.contiguous()
    value_t = value.transpose(-1, -2).contiguous()  # the second product's weight: (dim, kv_len)
    out = torch.empty((batch, q_len, heads, dim), dtype=query.dtype, device=query.device)
    for b in range(batch):
        add = mask[b if mask.shape[0] > 1 else 0]
        for h in range(kv_heads):
            heads_h = slice(h * group, (h + 1) * group)
            scores = linear(query[b, heads_h].reshape(group * q_len, dim), key[b, h], None,
                            "none", [], "")
            scores = scores.view(group, q_len, kv_len)
            scores += add
            probs = torch.softmax(scores, dim=-1).view(group * q_len, kv_len)
            res = linear(probs, value_t[b, h], None, "none", [], "")
            out[b, :, heads_h] = res.view(group, q_len, dim).transpose(0, 1)
    return out


@lru_cache(maxsize=None)
def onednn_attention_faster(heads: int, kv_heads: int, dim: int, dtype: Any, threads: int) -> bool:
    """Whether :func:`masked_attention` beats torch's SDPA on this machine for
    a packed prefill's attention (two rows of 384 tokens under a causal
    additive mask, ``heads`` query heads over ``kv_heads``, head size ``dim``),
    timed once per process and shape (``threads``: torch's thread count, for
    the cache). Which is faster depends on the CPU: SDPA's block products go
    through MKL, which is slow on some CPUs and fast on others."""
    import statistics
    import time

    import torch

    batch, length = 2, 384
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(batch, heads, length, dim, generator=gen).to(dtype)
    key = torch.randn(batch, kv_heads, length, dim, generator=gen).to(dtype)
    value = torch.randn(batch, kv_heads, length, dim, generator=gen).to(dtype)
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    mask = additive_mask(causal, dtype)
    scale = dim**-0.5
    kernels = {
        "onednn": lambda: masked_attention(query, key, value, mask, scale),
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scale, enable_gqa=True
        ),
    }
    times: Dict[str, List[float]] = {name: [] for name in kernels}
    with torch.inference_mode():
        for name, run in kernels.items():
            run()
        for _ in range(5):  # alternating: the machine's load hits both alike
            for name, run in kernels.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    onednn, sdpa = (statistics.median(times[name]) for name in ("onednn", "sdpa"))
    logger.info(
        "Prefill attention on %s: oneDNN %.2f ms, SDPA %.2f ms (%d query heads, %d key/value "
        "heads, %s)", "oneDNN" if onednn < sdpa else "SDPA", onednn * 1e3, sdpa * 1e3, heads,
        kv_heads, dtype,
    )
    return onednn < sdpa


# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20


@lru_cache(maxsize=None)
def retain_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a forward frees for the next one.

    A prefill's activations are tens of MB a layer. By default glibc serves
    blocks that large with fresh ``mmap`` pages, or hands the top of its heap
    back to the system once over a few MB is free, so every forward touches
    new pages: page faults and zeroing by the kernel on each (the default fp32
    student runs 1.06x faster without them on 2 cores, bench/retain_memory.py).
    Here blocks up to 32 MB come from the heap, which is not trimmed until a
    GB of it is free. The process keeps its peak working set instead of
    returning it between forwards. Once per process; RETURNS whether the
    settings took (False where the C library is not glibc)."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                (_M_TOP_PAD, _TOP_PAD),
            )
        )
    except (OSError, AttributeError):
        return False
    logger.info("malloc keeps freed memory for reuse: %s", "on" if done else "refused")
    return done
