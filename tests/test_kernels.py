import pickle

import pytest

from spacy_uniner import prompts
from spacy_uniner.models.hf import HFStudent
from spacy_uniner.models.kernels import onednn_available, packed_linear_class, prepack_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")

QUERIES = [
    prompts.render_query(text, label)
    for text in ["Ada Lovelace met Charles Babbage in London in 1833.", "Short."]
    for label in ["person", "location", "date", "x"]
]


def _load(path, dtype="float32"):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prepacked_model_gives_the_same_logits(tiny_model_dir, dtype):
    import torch

    plain, packed = _load(tiny_model_dir, dtype), _load(tiny_model_dir, dtype)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert prepack_linears(packed) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    # the tied LM head still shares the embedding; no other dense weight is kept
    head = packed.lm_head
    assert isinstance(head, packed_linear_class())
    assert head.weight is packed.model.embed_tokens.weight
    assert packed.model.layers[0].mlp.up_proj.weight is None
    # the SiLU-gated MLPs run the SiLU and the product inside oneDNN
    assert all("forward" in vars(layer.mlp) for layer in packed.model.layers)
    ids = torch.tensor([[1, 5, 9, 200, 7, 3000, 42]])
    with torch.inference_mode():
        a, b = plain(ids).logits.float(), packed(ids).logits.float()
    tol = 1e-4 if dtype == "float32" else 5e-2
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max()


def test_student_prepacks_by_default_and_answers_the_same(tiny_model_dir):
    packed = HFStudent(str(tiny_model_dir), max_new_tokens=8, batch_size=4, threads=1).load()
    plain = HFStudent(
        str(tiny_model_dir), max_new_tokens=8, batch_size=4, threads=1, prefix_sharing=False,
        prepack=False,
    ).load()
    assert packed.prepacked_layers == 2 * 7 + 1  # q k v o gate up down per layer, LM head
    assert plain.prepacked_layers == 0
    assert packed.num_parameters == plain.num_parameters > 0
    a, b = packed.generate(QUERIES), plain.generate(QUERIES)
    assert [g.text for g in a] == [g.text for g in b]
    for x, y in zip(a, b):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-3)


def test_a_pickled_prepacked_student_loads_again(tiny_model_dir):
    student = HFStudent(str(tiny_model_dir), max_new_tokens=6, threads=1).load()
    before = [g.text for g in student.generate(QUERIES)]
    copy = pickle.loads(pickle.dumps(student))
    assert copy._model is None and copy.prepacked_layers == 0
    assert [g.text for g in copy.generate(QUERIES)] == before
    assert copy.prepacked_layers == student.prepacked_layers


def test_prepack_is_for_the_cpu(tiny_model_dir):
    with pytest.raises(ValueError, match="prepack = true is for the CPU"):
        HFStudent(str(tiny_model_dir), device="cuda", prepack=True)
    HFStudent(str(tiny_model_dir), device="cuda", prepack=None)  # auto: left off on a GPU


def test_the_decoder_uses_the_current_cache_argument(tiny_model_dir):
    import warnings

    student = HFStudent(str(tiny_model_dir), max_new_tokens=4, threads=1).load()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        student.generate(QUERIES[:2])
    assert not [w for w in caught if "past_key_values" in str(w.message)]


@pytest.mark.parametrize("residual", [False, True])
def test_one_or_two_rows_are_computed_as_four_on_one_thread(monkeypatch, residual):
    import torch

    from spacy_uniner.models import kernels

    torch.manual_seed(0)
    dense = torch.nn.Linear(24, 40)
    weight, bias = dense.weight.detach().clone(), dense.bias.detach().clone()
    layer = packed_linear_class()(dense, keep_weight=False)
    op = torch.ops.mkldnn._linear_pointwise
    seen = []

    class Spy:  # records the rows each oneDNN product is given
        def __call__(self, x, *args):
            seen.append(x.reshape(-1, x.shape[-1]).shape[0])
            return op(x, *args)

        def binary(self, x, *args):
            seen.append(x.reshape(-1, x.shape[-1]).shape[0])
            return op.binary(x, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    threads = torch.get_num_threads()
    try:
        for threads_now, rows, given in [(1, 1, 4), (1, 2, 4), (1, 3, 3), (2, 1, 1), (2, 2, 2)]:
            torch.set_num_threads(threads_now)
            x = torch.randn(1, rows, 24)
            res = torch.randn(1, rows, 40) if residual else None
            seen.clear()
            got = layer(x, res)
            assert seen == [given], (threads_now, rows)
            monkeypatch.setattr(kernels, "PAD_ROWS", 0)  # off
            seen.clear()
            unpadded = layer(x, res)
            assert seen == [rows]
            monkeypatch.setattr(kernels, "PAD_ROWS", 4)
            want = torch.nn.functional.linear(x, weight, bias) + (0 if res is None else res)
            assert got.shape == unpadded.shape == (1, rows, 40)
            assert torch.allclose(got, unpadded, atol=1e-6, rtol=1e-6)
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        if torch.bfloat16 in kernels.onednn_dtypes():  # measured for fp32 only: left as it is
            torch.set_num_threads(1)
            seen.clear()
            half = packed_linear_class()(torch.nn.Linear(24, 40).bfloat16(), keep_weight=False)
            half(torch.randn(1, 1, 24, dtype=torch.bfloat16))
            assert seen == [1]
    finally:
        torch.set_num_threads(threads)


def test_a_prepacked_model_gives_the_same_logits_for_one_token_on_one_thread(tiny_model_dir):
    import torch

    plain, packed = _load(tiny_model_dir), _load(tiny_model_dir)
    prepack_linears(packed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one token: every product (the fused MLP's too) padded
    try:
        with torch.inference_mode():
            for ids in ([[200]], [[5, 3000]]):
                a, b = plain(torch.tensor(ids)).logits, packed(torch.tensor(ids)).logits
                assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch_mask", [True, False])
def test_masked_attention_equals_sdpa(dtype, batch_mask):
    import torch

    from spacy_uniner.models.kernels import additive_mask, masked_attention, onednn_dtypes

    if getattr(torch, dtype) not in onednn_dtypes():
        pytest.skip(f"no fast oneDNN {dtype} on this CPU")
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    batch, heads, kv_heads, q_len, dim = 3, 6, 2, 17, 16
    query = torch.randn(batch, heads, q_len, dim, dtype=dt)
    key = torch.randn(batch, kv_heads, q_len, dim, dtype=dt)
    # a non-contiguous value, as the model's projections give it
    value = torch.randn(batch, q_len, kv_heads, dim, dtype=dt).transpose(1, 2)
    mask = torch.rand(batch if batch_mask else 1, 1, q_len, q_len) > 0.5
    mask |= torch.eye(q_len, dtype=torch.bool)  # every row attends somewhere
    got = masked_attention(query, key, value, additive_mask(mask, dt), 0.3)
    want = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    assert got.shape == (batch, q_len, heads, dim) and got.is_contiguous()
    tol = 1e-5 if dtype == "float32" else 3e-2
    assert torch.allclose(got.float(), want, atol=tol, rtol=tol), (got.float() - want).abs().max()
    with pytest.raises(ValueError, match="5 query heads over 2"):
        masked_attention(query[:, :5], key, value, additive_mask(mask, dt), 0.3)


@pytest.mark.parametrize("faster", [True, False])
def test_the_prefill_attention_runs_on_onednn_only_when_prepacked_and_faster(
    tiny_model_dir, monkeypatch, faster
):
    from spacy_uniner.models import decoding, hf, lean

    calls = []  # per oneDNN attention call: whether it ran inside a decode step
    stepping = []
    real = decoding.masked_attention
    for module in (decoding, lean):  # the model's own forward, and LeanLlama
        monkeypatch.setattr(
            module, "masked_attention", lambda *a: calls.append(bool(stepping)) or real(*a)
        )
    for name in ("_step", "_step_drafted"):
        step = getattr(decoding.SharedDecoder, name)

        def in_step(self, *args, _step=step):
            stepping.append(True)
            try:
                return _step(self, *args)
            finally:
                stepping.pop()

        monkeypatch.setattr(decoding.SharedDecoder, name, in_step)
    timed = []
    monkeypatch.setattr(hf, "onednn_attention_faster", lambda *a: timed.append(a) or faster)
    packed = HFStudent(str(tiny_model_dir), max_new_tokens=6, threads=1)
    plain = HFStudent(str(tiny_model_dir), max_new_tokens=6, threads=1, prepack=False)
    a = packed.generate(QUERIES)
    cfg = packed._model.config
    assert timed == [(cfg.num_attention_heads, cfg.num_key_value_heads,
                      cfg.hidden_size // cfg.num_attention_heads, packed._model.dtype, 1)]
    assert packed.onednn_attention is faster
    if faster:
        # every layer of every admission (at least), never a decode step
        assert len(calls) >= cfg.num_hidden_layers and not any(calls)
    else:
        assert not calls
    calls.clear()
    b = plain.generate(QUERIES)
    assert not calls and len(timed) == 1 and plain.onednn_attention is False
    assert [g.text for g in a] == [g.text for g in b]
    for x, y in zip(a, b):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-3)


def test_prefill_attention_fixes_the_kernel(tiny_model_dir, monkeypatch):
    from spacy_uniner.models import hf

    monkeypatch.setattr(hf, "onednn_attention_faster", lambda *a: pytest.fail("timed"))
    replies = {}
    for choice, on in (("sdpa", False), ("onednn", True)):
        student = HFStudent(
            str(tiny_model_dir), max_new_tokens=6, threads=1, prefill_attention=choice
        )
        replies[choice] = student.generate(QUERIES)
        assert student.onednn_attention is on and student.prepacked_layers > 0
        assert f"prefill_attention={choice!r}" in repr(student)
    assert [g.text for g in replies["sdpa"]] == [g.text for g in replies["onednn"]]
    with pytest.raises(ValueError, match="prefill_attention must be one of.*'flash'"):
        HFStudent(str(tiny_model_dir), prefill_attention="flash")
    with pytest.raises(ValueError, match="prepacked CPU path.*prepack=False"):
        HFStudent(str(tiny_model_dir), prepack=False, prefill_attention="onednn")
    with pytest.raises(ValueError, match="prepacked CPU path.*'cuda'"):
        HFStudent(str(tiny_model_dir), device="cuda", prefill_attention="onednn")
    monkeypatch.setattr(hf, "onednn_dtypes", lambda: ())  # e.g. bf16 on a CPU without it
    with pytest.raises(ValueError, match="cannot run student .*torch.float32 with"):
        HFStudent(str(tiny_model_dir), prefill_attention="onednn").load()
    monkeypatch.setattr(hf, "onednn_available", lambda: False)  # no oneDNN: not prepacked
    with pytest.raises(ValueError, match="was not prepacked"):
        HFStudent(str(tiny_model_dir), prefill_attention="onednn").load()


def test_the_attention_kernel_is_timed_once_per_shape(caplog):
    import torch

    from spacy_uniner.models.kernels import onednn_attention_faster

    onednn_attention_faster.cache_clear()
    with caplog.at_level("INFO", logger="spacy_uniner"):
        first = onednn_attention_faster(4, 2, 16, torch.float32, 1)
        again = onednn_attention_faster(4, 2, 16, torch.float32, 1)
    assert isinstance(first, bool) and again is first
    timings = [r.getMessage() for r in caplog.records if "Prefill attention on" in r.getMessage()]
    assert len(timings) == 1
    assert timings[0].startswith("Prefill attention on " + ("oneDNN" if first else "SDPA"))
