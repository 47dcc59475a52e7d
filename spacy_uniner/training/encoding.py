"""Conversations → token ids with loss masks (only answers and their end marker learn).

Each piece of :func:`spacy_uniner.prompts.training_segments` is tokenised on its
own, exactly as inference sees it: the prompt up to ``ASSISTANT:`` is encoded,
then the model continues with `` [...]</s>``. A conversation longer than
``max_length`` is split into several (each repeats the passage) at turn
boundaries; a single turn that cannot fit is dropped and counted.
"""

from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple

from .. import prompts
from .data import Conversation

IGNORE_INDEX = -100


def _encode(tokenizer: Any, text: str) -> List[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _bos(tokenizer: Any) -> List[int]:
    """What the tokenizer puts before a prompt at inference (e.g. LLaMA's <s>)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[: len(with_special) - len(without)]


def encode_conversation(
    tokenizer: Any, conv: Conversation, max_length: int, stats: Counter
) -> List[Dict[str, List[int]]]:
    """One or more examples ``{"input_ids", "labels"}`` for one conversation."""
    prefix = _bos(tokenizer) + _encode(tokenizer, prompts.render_prefix(conv.passage, conv.dataset))
    turns = []
    for question, answer in zip(conv.questions, conv.answers):
        q_ids = _encode(tokenizer, prompts.render_turn(prompts.Turn(question)))
        a_ids = _encode(tokenizer, f" {answer}{prompts.SEP2}")
        turns.append((q_ids, a_ids))
    examples: List[Dict[str, List[int]]] = []
    ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
    for q_ids, a_ids in turns:
        need = len(q_ids) + len(a_ids)
        if len(prefix) + need > max_length:
            stats["turns_too_long"] += 1
            continue
        if len(ids) + need > max_length:
            examples.append({"input_ids": ids, "labels": labels})
            stats["conversations_split"] += 1
            ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
        ids += q_ids + a_ids
        labels += [IGNORE_INDEX] * len(q_ids) + a_ids
    if len(ids) > len(prefix):
        examples.append({"input_ids": ids, "labels": labels})
    stats["examples"] += len(examples)
    stats["tokens"] += sum(len(e["input_ids"]) for e in examples)
    stats["loss_tokens"] += sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in examples)
    return examples


def encode_all(
    tokenizer: Any, conversations: Sequence[Conversation], max_length: int
) -> Tuple[List[Dict[str, List[int]]], Counter]:
    stats: Counter = Counter()
    out: List[Dict[str, List[int]]] = []
    for conv in conversations:
        out.extend(encode_conversation(tokenizer, conv, max_length, stats))
    return out, stats


def pack(examples: Sequence[Dict[str, List[int]]], max_length: int) -> List[Dict[str, List[int]]]:
    """Greedy packing of whole examples into sequences of at most ``max_length`` tokens."""
    packed: List[Dict[str, List[int]]] = []
    current: Dict[str, List[int]] = {"input_ids": [], "labels": []}
    for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):
        if current["input_ids"] and len(current["input_ids"]) + len(ex["input_ids"]) > max_length:
            packed.append(current)
            current = {"input_ids": [], "labels": []}
        current["input_ids"] = current["input_ids"] + ex["input_ids"]
        current["labels"] = current["labels"] + ex["labels"]
    if current["input_ids"]:
        packed.append(current)
    return packed


class Collator:
    """Right-pads a batch; padding never carries loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[Dict[str, List[int]]]) -> Dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
