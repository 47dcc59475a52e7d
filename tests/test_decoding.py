"""SharedDecoder against plain per-prompt greedy decoding on a tiny random model."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_uniner import prompts
from spacy_uniner.models.decoding import SharedDecoder
from spacy_uniner.prompts import group_by_prefix


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model with larger random weights: its greedy choices then turn
    on every position and mask detail (the default init gives near-uniform
    logits that hide them)."""
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.5, generator=generator)
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


@pytest.mark.parametrize("slots", [1, 3, 16])
def test_shared_decoder_equals_per_prompt_greedy(tiny, slots, monkeypatch):
    model, tok = tiny
    ps, ids = _prompts(tok)
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
    )
    replies = decoder.generate(ids, list(group_by_prefix(ps).values()))
    for i, (reply, logprobs) in enumerate(replies):
        assert reply == _reference(model, ids[i], tok.eos_token_id, 12), ps[i]
        assert len(logprobs) == len(reply) and all(lp <= 0 for lp in logprobs)
    # 2 spare columns: the slab is compacted (and grown) along the way, answers unchanged
    assert bool(compactions) == (slots < 16)


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


def test_a_chooser_picks_the_tokens_and_their_logprobs(tiny):
    """``choose`` replaces the argmax; the recorded log-probability is the chosen token's."""
    model, tok = tiny
    ps, ids = _prompts(tok)
    seen = []

    def second_best(prompt, reply, logprobs):
        seen.append((prompt, len(reply)))
        return int(logprobs.topk(2).indices[1])

    decoder = SharedDecoder(
        model,
        slots=3,
        max_new_tokens=3,
        eos_token_id=None,
        pad_token_id=tok.pad_token_id,
        finished=lambda reply: False,
        choose=second_best,
    )
    replies = decoder.generate(ids[:5], [list(range(5))])
    assert sorted(seen) == [(p, k) for p in range(5) for k in range(3)]
    with torch.inference_mode():
        for prompt, (reply, logprobs) in zip(ids[:5], replies):
            full = torch.tensor([prompt + reply])
            logits = model(full).logits[0].float().log_softmax(-1)
            for k, t in enumerate(reply):
                row = logits[len(prompt) - 1 + k]
                assert t == int(row.topk(2).indices[1])
                assert logprobs[k] == pytest.approx(row[t].item(), abs=1e-4)
