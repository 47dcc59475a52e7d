import pytest
from transformers import AutoTokenizer

from spacy_uniner import prompts
from spacy_uniner.training.data import Conversation
from spacy_uniner.training.encoding import IGNORE_INDEX, Collator, encode_all, pack


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


def conv(passage="Ada Lovelace met Charles Babbage in London.", n=2):
    labels = ["person", "location", "date", "city"][:n]
    answers = ['["Ada Lovelace", "Charles Babbage"]', '["London"]', "[]", '["London"]'][:n]
    return Conversation("c1", "test", None, passage, [prompts.question(t) for t in labels],
                        answers, labels, "type")


def test_only_answers_and_their_end_marker_carry_loss(tokenizer):
    c = conv()
    (example,), stats = encode_all(tokenizer, [c], max_length=512)
    ids, labels = example["input_ids"], example["labels"]
    assert tokenizer.decode(ids) == c.render()
    # the masked labels, decoded back, are exactly the answers with </s>
    spans, current = [], []
    for tid, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            if current:
                spans.append(tokenizer.decode(current))
                current = []
        else:
            assert lab == tid
            current.append(lab)
    if current:
        spans.append(tokenizer.decode(current))
    assert spans == [f" {a}</s>" for a in c.answers]
    assert stats["loss_tokens"] == sum(lab != IGNORE_INDEX for lab in labels)


def test_long_conversations_are_split_at_turns_not_truncated(tokenizer):
    c = conv(n=4)
    full, _ = encode_all(tokenizer, [c], max_length=512)
    prefix_len = len(tokenizer(prompts.render_prefix(c.passage), add_special_tokens=False)["input_ids"])
    limit = prefix_len + 30
    split, stats = encode_all(tokenizer, [c], max_length=limit)
    assert len(split) > 1 and stats["conversations_split"] == len(split) - 1
    assert all(len(e["input_ids"]) <= limit for e in split)
    loss = lambda exs: sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in exs)
    assert loss(split) == loss(full), "every answer token still learns"
    tiny, stats = encode_all(tokenizer, [c], max_length=prefix_len + 3)
    assert tiny == [] and stats["turns_too_long"] == 4


def test_packing_and_collator(tokenizer):
    examples, _ = encode_all(tokenizer, [conv(), conv("Short text.", 1)], max_length=512)
    packed = pack(examples, 512)
    assert len(packed) == 1
    assert sum(len(e["input_ids"]) for e in examples) == len(packed[0]["input_ids"])
    batch = Collator(tokenizer.pad_token_id)(examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    n = len(examples[1]["input_ids"])
    assert batch["attention_mask"][1, n:].sum() == 0
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
