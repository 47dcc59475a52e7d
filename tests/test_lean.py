"""LeanLlama: the decoder's forwards of a prepacked Llama, against the model's own."""

import pytest
import torch

from spacy_uniner.models.decoding import attention_shape, slab_cache
from spacy_uniner.models.kernels import additive_mask, onednn_available, onednn_dtypes
from spacy_uniner.models.kernels import prepack_linears
from spacy_uniner.models.lean import LeanLlama

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


def _model(path, dtype=torch.float32, prepack=True):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights: logits that differ where anything differs
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.5, generator=generator)
    if prepack:
        prepack_linears(model)
    return model


def _slabs(model, rows, columns):
    layers, _, kv_heads, dim = attention_shape(model.config)
    dtype = next(model.parameters()).dtype
    shape = (rows, kv_heads, columns, dim)
    return (
        [torch.zeros(shape, dtype=dtype) for _ in range(layers)],
        [torch.zeros(shape, dtype=dtype) for _ in range(layers)],
    )


@pytest.mark.parametrize("onednn_attention", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lean_forward_gives_the_models_logits_and_keys(tiny_model_dir, dtype, onednn_attention):
    dt = getattr(torch, dtype)
    if dt not in onednn_dtypes():
        pytest.skip(f"no fast oneDNN {dtype} on this CPU")
    packed = _model(tiny_model_dir, dt)
    assert LeanLlama.supports(packed) and not LeanLlama.supports(_model(tiny_model_dir, dt, False))
    lean = LeanLlama(packed, onednn_attention=onednn_attention)

    def close(a, b):  # fp32: to summation order; bf16: to its 8-bit mantissa
        a, b = a.float(), b.float()
        if dtype == "float32":
            return torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        return bool((a - b).norm() <= 2e-2 * b.norm())
    rows, tokens = 2, 23
    ids = torch.randint(0, 3000, (rows, tokens), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(tokens).repeat(rows, 1)
    causal = torch.ones(tokens, tokens, dtype=torch.bool).tril()
    mask = additive_mask(causal.expand(rows, 1, tokens, tokens), dt)
    keep = torch.zeros(rows, tokens, dtype=torch.bool)
    keep[0, [4, 22]] = True
    keep[1, 15] = True
    keys, values = _slabs(packed, rows, tokens + 2)
    with torch.inference_mode():
        want = packed(ids, use_cache=True)  # the model's own forward, same kernels
        # a causal mask keeps the first 17 tokens to themselves: the split is exact
        got = lean(ids, mask, positions, slab_cache(keys, values, 0), keep, prefix=17)
        assert got.shape == (3, packed.config.vocab_size)
        assert close(got, want.logits[keep])
        for layer, k, v in zip(want.past_key_values.layers, keys, values):
            assert close(k[:, :, :tokens], layer.keys) and close(v[:, :, :tokens], layer.values)
        # a decode step: two more tokens per row on the cache (the second drafted)
        more = torch.randint(0, 3000, (rows, 2), generator=torch.Generator().manual_seed(2))
        step_mask = torch.ones(rows, 1, 2, tokens + 2, dtype=torch.bool)
        step_mask[:, 0, 0, -1] = False
        step = lean(
            more,
            additive_mask(step_mask, dt),
            torch.arange(tokens, tokens + 2).repeat(rows, 1),
            slab_cache(keys, values, tokens),
            torch.ones(rows, 2, dtype=torch.bool),
        )
        full = packed(torch.cat([ids, more], dim=1)).logits[:, -2:].reshape(2 * rows, -1)
        assert close(step, full)


def test_lean_forward_takes_only_prepacked_llamas(tiny_model_dir):
    packed = _model(tiny_model_dir)
    assert LeanLlama.supports(packed)
    packed.model.layers[0].mlp.act_fn = torch.nn.GELU()  # not a SiLU-gated MLP any more
    assert not LeanLlama.supports(packed)
    with pytest.raises(TypeError, match="additive"):
        LeanLlama(_model(tiny_model_dir))(
            torch.zeros(1, 2, dtype=torch.long),
            torch.ones(1, 1, 2, 2, dtype=torch.bool),
            torch.arange(2)[None],
            None,
            torch.ones(1, 2, dtype=torch.bool),
        )
