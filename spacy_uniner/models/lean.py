"""A lean forward for prepacked Llama decoders on the CPU.

:class:`~spacy_uniner.models.decoding.SharedDecoder` runs two kinds of
forwards: packed admissions (a few rows of ~400 tokens) and decode steps (up to
``slots`` rows of 1-2 tokens). Through ``LlamaForCausalLM.forward`` both pay for
what they do not need:

- every position goes through the last layer's attention output, MLP and norm,
  though only the positions that give a next token are read (in an admission,
  one in about forty); here the last layer computes keys and values for every
  position and the rest for those positions only;
- each residual addition is a pass of its own; here oneDNN adds the residual
  inside the output and down products (a binary post-op);
- an admission's passage tokens attend to the question tails' columns only to
  mask them out; here they are left out (``split_prefill``);
- a decode step folds its grouped query heads and their mask in every layer;
  here the mask is folded once per step;
- the per-call work of the generic forward (mask and cache plumbing, output
  objects, hooks) is skipped.

The arithmetic is the model's own: the same prepacked products (the SiLU-gated
MLP fused as in :func:`~spacy_uniner.models.kernels.fuse_gated_mlps`), the
model's rotary embedding and RMS norms, the same attention kernels. Results
equal the model's forward up to floating-point summation order.
"""

from typing import Any, Callable, Optional

from .decoding import _FOLD_TOKENS, split_prefill
from .kernels import gated_mlp, masked_attention, packed_linear_class


class LeanLlama:
    """Logits at the kept positions of a ``LlamaForCausalLM`` whose linear
    layers are prepacked (:func:`~spacy_uniner.models.kernels.prepack_linears`),
    for the shared decoder's forwards: ``(input_ids, mask, positions, cache,
    keep, prefix)`` as ``SharedDecoder._forward`` takes them, the cache a
    ``Cache`` of ``SlabLayer`` s."""

    def __init__(self, model: Any, onednn_attention: bool = False) -> None:
        import torch

        self.model = model
        self.layers = list(model.model.layers)
        first = self.layers[0].self_attn
        self.heads = model.config.num_attention_heads
        self.kv_heads = model.config.num_key_value_heads or self.heads
        self.head_dim = first.head_dim
        self.groups = self.heads // self.kv_heads
        self.scaling = first.scaling
        self.onednn_attention = onednn_attention
        self.dtype = next(model.parameters()).dtype
        # torch's fused RMS norm equals the model's for fp32; other dtypes keep the
        # model's own (it upcasts, then casts back before the weight).
        self.fused_norm = self.dtype == torch.float32

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether ``model`` is a Llama causal LM on the CPU whose attention and
        MLP products are all prepacked, with SiLU-gated MLPs."""
        try:
            from transformers.models.llama import modeling_llama as llama
        except ImportError:  # pragma: no cover - transformers always has Llama
            return False
        from .kernels import _gated_forward, _is_silu

        if type(model) is not llama.LlamaForCausalLM:
            return False
        packed = packed_linear_class()
        config = model.config
        if getattr(config, "pretraining_tp", 1) not in (1, None):
            return False
        if not isinstance(model.lm_head, packed):
            return False
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if type(layer) is not llama.LlamaDecoderLayer or type(attn) is not llama.LlamaAttention:
                return False
            linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj]
            linears += [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
            if not all(isinstance(m, packed) for m in linears):
                return False
            if not (_is_silu(mlp.act_fn) and _gated_forward(type(mlp))):
                return False
            if next(layer.parameters()).device.type != "cpu":
                return False
        return True

    # -- pieces --------------------------------------------------------------

    def _norm(self, module: Any, x: Any) -> Any:
        if self.fused_norm:
            import torch

            return torch.nn.functional.rms_norm(
                x, (x.shape[-1],), module.weight, module.variance_epsilon
            )
        return module(x)

    @staticmethod
    def _rope(x: Any, cos: Any, sin: Any) -> Any:
        """The model's rotary embedding of ``x (..., heads, dim)``; cos/sin
        ``(..., dim)`` (``apply_rotary_pos_emb`` with the heads dimension)."""
        from transformers.models.llama.modeling_llama import rotate_half

        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        return (x * cos) + (rotate_half(x) * sin)

    def _mlp(self, layer: Any, x: Any) -> Any:
        """``x + mlp(post_attention_layernorm(x))``, the residual added by oneDNN."""
        return gated_mlp(layer.mlp, self._norm(layer.post_attention_layernorm, x), residual=x)

    def _attend(self) -> Callable[[Any, Any, Any, Any], Any]:
        """One masked attention call over grouped heads, ``(batch, heads,
        q_len, dim)`` out: SDPA, or oneDNN's where the decoder chose it."""
        import torch

        scale = self.scaling
        if self.onednn_attention:
            return lambda q, k, v, m: masked_attention(q, k, v, m, scale).transpose(1, 2)
        gqa = self.groups > 1
        return lambda q, k, v, m: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=m, scale=scale, enable_gqa=gqa
        )

    # -- the forward ---------------------------------------------------------

    def __call__(
        self,
        input_ids: Any,
        mask: Any,
        positions: Any,
        cache: Any,
        keep: Any,
        prefix: Optional[int] = None,
    ) -> Any:
        import torch

        if mask.dtype == torch.bool:
            raise TypeError("LeanLlama takes additive attention masks")
        rows, tokens = input_ids.shape
        heads, kv_heads, dim, groups = self.heads, self.kv_heads, self.head_dim, self.groups
        inner = self.model.model
        x = inner.embed_tokens(input_ids)
        cos, sin = inner.rotary_emb(x, positions)
        attend = self._attend()
        step = tokens <= _FOLD_TOKENS and prefix is None
        if step:
            # A decode step: the query heads of a key/value head become one head
            # of groups x tokens queries; the mask is folded once for all layers.
            cols = mask.shape[-1]
            folded = (
                mask[:, :, None]
                .expand(rows, 1, groups, tokens, cols)
                .reshape(rows, 1, groups * tokens, cols)
            )
        flat_keep = keep.reshape(-1)
        kept = int(flat_keep.sum())
        # The last layer computes only the kept positions past its keys/values,
        # where they are few (an admission's last tail tokens).
        trim = kept * 2 <= rows * tokens
        last = len(self.layers) - 1
        for index, (layer, layer_cache) in enumerate(zip(self.layers, cache.layers)):
            attn = layer.self_attn
            h = self._norm(layer.input_layernorm, x)
            k = attn.k_proj(h).view(rows, tokens, kv_heads, dim)
            v = attn.v_proj(h).view(rows, tokens, kv_heads, dim)
            k = self._rope(k, cos, sin)
            keys, values = layer_cache.update(k.transpose(1, 2), v.transpose(1, 2))
            if index == last and trim:
                return self._last(layer, h, x, keep, mask, keys, values, cos, sin, attend)
            q = self._rope(attn.q_proj(h).view(rows, tokens, heads, dim), cos, sin)
            if step:
                q = q.view(rows, tokens, kv_heads, groups, dim).permute(0, 2, 3, 1, 4)
                out = torch.nn.functional.scaled_dot_product_attention(
                    q.reshape(rows, kv_heads, groups * tokens, dim),
                    keys,
                    values,
                    attn_mask=folded,
                    scale=self.scaling,
                )
                out = out.view(rows, kv_heads, groups, tokens, dim).permute(0, 3, 1, 2, 4)
            else:
                out = split_prefill(
                    attend, q.transpose(1, 2), keys, values, mask, prefix or 0, token_dim=2
                ).transpose(1, 2)
            x = attn.o_proj(out.reshape(rows, tokens, heads * dim), x)
            x = self._mlp(layer, x)
        x = x.reshape(rows * tokens, -1)[flat_keep]
        return self.model.lm_head(self._norm(inner.norm, x))

    def _last(
        self,
        layer: Any,
        h: Any,
        x: Any,
        keep: Any,
        mask: Any,
        keys: Any,
        values: Any,
        cos: Any,
        sin: Any,
        attend: Callable[[Any, Any, Any, Any], Any],
    ) -> Any:
        """The last layer past its keys/values (already in the cache) and the
        LM head, for the kept positions only: each row's kept queries go
        through attention together (rows padded to the most kept)."""
        import torch

        heads, dim = self.heads, self.head_dim
        rows, tokens = keep.shape
        attn = layer.self_attn
        where = keep.nonzero()  # (kept, 2): row, token; row-major as the logits
        row, token = where[:, 0], where[:, 1]
        counts = keep.sum(dim=1)
        slot = torch.arange(len(row), device=row.device) - (counts.cumsum(0) - counts)[row]
        width = int(counts.max())
        q = attn.q_proj(h[row, token]).view(-1, heads, dim)
        q = self._rope(q, cos[row, token], sin[row, token])
        queries = q.new_zeros((rows, width, heads, dim))
        queries[row, slot] = q
        # padded query slots copy a kept token's mask row (no empty softmax); unread
        pick = torch.zeros((rows, width), dtype=torch.long, device=row.device)
        pick[row, slot] = token
        rows_mask = mask[:, 0].gather(1, pick[:, :, None].expand(rows, width, mask.shape[-1]))
        out = attend(queries.transpose(1, 2), keys, values, rows_mask[:, None])
        out = out.transpose(1, 2)[row, slot].reshape(-1, heads * dim)
        y = attn.o_proj(out, x[row, token])
        y = self._mlp(layer, y)
        return self.model.lm_head(self._norm(self.model.model.norm, y))

