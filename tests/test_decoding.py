"""SharedDecoder against plain per-prompt greedy decoding on a tiny random model."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_uniner import prompts
from spacy_uniner.models import decoding
from spacy_uniner.models.decoding import SharedDecoder
from spacy_uniner.models.hf import _group_by_prefix
from spacy_uniner.models.kernels import onednn_available, prepack_linears
from spacy_uniner.models.lean import LeanLlama


@pytest.fixture(scope="module", params=["model", "lean"])
def tiny(tiny_model_dir, request):
    """The tiny model with larger random weights: its greedy choices then turn
    on every position and mask detail (the default init gives near-uniform
    logits that hide them). "model": the decoder runs the model's own forward;
    "lean": the model is prepacked, and the decoder runs LeanLlama."""
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.5, generator=generator)
    if request.param == "lean":
        if not onednn_available():
            pytest.skip("torch built without oneDNN")
        prepack_linears(model)
    assert LeanLlama.supports(model) is (request.param == "lean")
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _length(ids):
    """A reply's length decided by its first token: 1 to 9 tokens."""
    return 1 + ids[0] % 9


def _reference(model, ids, eos, max_new):
    """Greedy tokens of one prompt alone, cut where the decoder's rules end it."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(ids) :].tolist()
    reply = []
    for tid in out:
        if tid == eos:
            break
        reply.append(tid)
        if len(reply) >= max_new or len(reply) >= _length(reply):
            break
    return reply


def _prompts(tok):
    texts = [
        "Ada Lovelace met Charles Babbage in London in 1833.",
        "The Transformer was introduced at NeurIPS by Google. " * 4,
        "Short.",
        "Marie Curie won two Nobel prizes, in Physics and in Chemistry.",
    ]
    labels = ["person", "location", "date", "programming language", "award"]
    ps = [prompts.render_query(t, label) for t in texts for label in labels]
    ps += ["free text without a question", "x"]
    return ps, [tok(p)["input_ids"] for p in ps]


@pytest.mark.parametrize("queries_only", [False, True])
@pytest.mark.parametrize("draft_tokens", [0, 2])
@pytest.mark.parametrize("slots", [1, 3, 16])
def test_shared_decoder_equals_per_prompt_greedy(
    tiny, slots, draft_tokens, queries_only, monkeypatch
):
    model, tok = tiny
    ps, ids = _prompts(tok)
    if queries_only:  # all prompts start with the system text: its keys/values are shared
        ps, ids = ps[:-2], ids[:-2]
    compactions = []
    original = SharedDecoder._compact
    monkeypatch.setattr(
        SharedDecoder, "_compact", lambda self: compactions.append(self._column) or original(self)
    )
    decoder = SharedDecoder(
        model,
        slots=slots,
        max_new_tokens=12,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: len(reply) >= _length(reply),
        spare_columns=2 if slots < 16 else None,
        draft_tokens=draft_tokens,
    )
    replies = decoder.generate(ids, list(_group_by_prefix(ps).values()))
    for i, (reply, logprobs) in enumerate(replies):
        assert reply == _reference(model, ids[i], tok.eos_token_id, 12), ps[i]
        assert len(logprobs) == len(reply) and all(lp <= 0 for lp in logprobs)
    # 2 spare columns: the slab is compacted (and grown) along the way, answers unchanged
    assert bool(compactions) == (slots < 16)
    assert (decoder.stats["drafted"] > 0) == (draft_tokens > 0)
    common = decoder._common
    if queries_only:
        assert len(common.tokens) >= 8 and all(tuple(x[: len(common.tokens)]) == common.tokens
                                               for x in ids)
        assert tok.decode(list(common.tokens)).startswith("A virtual assistant")
    else:
        assert common is None


def test_logprobs_match_the_model(tiny):
    model, tok = tiny
    ps, ids = _prompts(tok)
    decoder = SharedDecoder(
        model,
        slots=4,
        max_new_tokens=3,
        eos_token_id=None,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: False,
    )
    replies = decoder.generate(ids[:5], [list(range(5))])
    with torch.inference_mode():
        for prompt, (reply, logprobs) in zip(ids[:5], replies):
            full = torch.tensor([prompt + reply])
            logits = model(full).logits[0].float().log_softmax(-1)
            expected = [logits[len(prompt) - 1 + k, t].item() for k, t in enumerate(reply)]
            assert logprobs == pytest.approx(expected, abs=1e-4)


def test_workspace_is_reused_and_groups_wider_than_the_batch(tiny):
    model, tok = tiny
    ps, ids = _prompts(tok)
    workspace = {}
    kwargs = dict(
        max_new_tokens=4,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: False,
        workspace=workspace,
    )
    first = SharedDecoder(model, slots=2, **kwargs).generate(ids, [list(range(len(ids)))])
    slab = workspace["main"][0][0]
    # one group of 22 prompts on 2 rows: admitted at once, decoded two at a time
    assert slab.shape[0] == 2
    again = SharedDecoder(model, slots=2, **kwargs).generate(ids, [list(range(len(ids)))])
    assert workspace["main"][0][0] is slab
    assert again == first


def test_bad_prompts_and_settings(tiny):
    model, tok = tiny
    kwargs = dict(eos_token_id=None, pad_token_id=0, finished=lambda reply: False)
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        SharedDecoder(model, slots=2, max_new_tokens=2, **kwargs).generate([[5], []], [[0], [1]])
    with pytest.raises(ValueError, match="slots"):
        SharedDecoder(model, slots=0, max_new_tokens=2, **kwargs)
    with pytest.raises(ValueError, match="draft_tokens must be 0 or more, got -1"):
        SharedDecoder(model, slots=2, max_new_tokens=2, draft_tokens=-1, **kwargs)


def test_attention_switch_is_undone(tiny):
    model, _ = tiny
    before = model.config._attn_implementation
    with decoding._attention(model):
        assert model.config._attn_implementation == decoding.ATTENTION
    assert model.config._attn_implementation == before


def test_lookup_draft():
    from spacy_uniner.models.decoding import lookup_draft

    # the latest occurrence matching the most of the last tokens wins
    assert lookup_draft([1, 2, 3, 9, 5, 2, 3, 7, 8, 1, 2, 3], 2) == [9, 5]
    assert lookup_draft([4, 3, 6, 1, 2, 3, 7, 2, 3], 3) == [7, 2, 3]
    assert lookup_draft([5, 3, 7, 3], 4) == [7, 3]  # cut at the context's end
    assert lookup_draft([1, 2, 3], 2) == []  # the last token never occurred
    assert lookup_draft([3, 1, 3], 0) == []
    assert lookup_draft([], 2) == []


def _decode(model, tok, ids, groups, **kwargs):
    decoder = SharedDecoder(
        model,
        slots=4,
        max_new_tokens=10,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: len(reply) >= _length(reply),
        spare_columns=3,
        **kwargs,
    )
    return decoder, decoder.generate(ids, groups)


def test_drafts_keep_only_the_models_own_tokens(tiny, monkeypatch):
    """Oracle drafts (the true continuation, sometimes with a wrong token in
    it) take fewer steps; wrong drafts are dropped: the same tokens and
    log-probabilities as one token per step."""
    model, tok = tiny
    ps, ids = _prompts(tok)
    groups = list(_group_by_prefix(ps).values())
    plain, want = _decode(model, tok, ids, groups)
    truth = {tuple(ids[i]): reply for i, (reply, _) in enumerate(want)}

    def oracle(self, row):
        room = min(self.draft_tokens, self.max_new_tokens - len(row.ids) - 1)
        true = truth[tuple(self._prompts[row.prompt])][len(row.ids) :][: max(room, 0)]
        if row.prompt % 3 == 0 and true:  # a wrong token somewhere in the draft
            true = true[:-1] + [(true[-1] + 1) % len(tok)]
        return true

    monkeypatch.setattr(SharedDecoder, "_draft", oracle)
    drafted, got = _decode(model, tok, ids, groups, draft_tokens=3)
    assert [r for r, _ in got] == [r for r, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, abs=1e-4)
    stats = drafted.stats
    assert 0 < stats["accepted"] < stats["drafted"]
    assert stats["steps"] < plain.stats["steps"]


def test_the_common_prefix_is_kept_between_calls_and_recomputed_when_it_changes(tiny):
    model, tok = tiny
    ps, ids = _prompts(tok)
    ids = ids[:-2]  # UniNER queries only
    workspace = {}
    kwargs = dict(
        slots=4,
        max_new_tokens=4,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: False,
        workspace=workspace,
    )
    groups = list(_group_by_prefix(ps[:-2]).values())
    first = SharedDecoder(model, **kwargs).generate(ids, groups)
    held = workspace["common"]
    # one passage's queries alone: the held prefix still fits and is reused
    alone = SharedDecoder(model, **kwargs)
    one = alone.generate([ids[i] for i in groups[0]], [list(range(len(groups[0])))])
    assert alone._common is held
    for (reply, logprobs), i in zip(one, groups[0]):
        assert reply == first[i][0] and logprobs == pytest.approx(first[i][1], abs=1e-4)
    # other prompts: none of them starts with the held prefix; recomputed for theirs
    other = [[7, 7, 7] + x for x in ids]
    again = SharedDecoder(model, **kwargs)
    again.generate(other, groups)
    assert again._common is not held and again._common.tokens[:3] == (7, 7, 7)
    assert workspace["common"] is again._common
    # a single group with nothing held computes no common prefix
    workspace.clear()
    single = SharedDecoder(model, **kwargs)
    single.generate([ids[i] for i in groups[0]], [list(range(len(groups[0])))])
    assert single._common is None and "common" not in workspace
