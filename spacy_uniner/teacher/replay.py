"""Replay the real ChatGPT answers of Pile-NER as a teacher (for tests and demos).

The Pile subset holds one or two type queries per passage. A passage's answer
is the (mention, type) pairs of its positive queries, in the Fig. 1 reply
format ``[("mention", "type"), ...]``. For the definition variant the type is
replaced by its definition from the definition subset's instruction. A passage
the data does not know gets ``[]``; a chunk cut from a known passage gets the
pairs whose mention occurs in the chunk.
"""

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

Pair = Tuple[str, str]
_DEFINITION = re.compile(r"DEFINITION:\s*(.+)")


def render_reply(pairs: List[Pair]) -> str:
    """The Fig. 1 reply format, strings quoted like JSON."""
    inner = ", ".join(
        f"({json.dumps(m, ensure_ascii=False)}, {json.dumps(t, ensure_ascii=False)})"
        for m, t in pairs
    )
    return f"[{inner}]"


def _load(path: Path, definitions: bool) -> Dict[str, List[Pair]]:
    answers: Dict[str, List[Pair]] = defaultdict(list)
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            text = row["input"].strip()
            label = row["tagName"]
            if definitions:
                match = _DEFINITION.search(row.get("instruction", ""))
                label = match.group(1).strip() if match else f"a kind of {label}"
            answers.setdefault(text, [])
            for mention in json.loads(row["output"]):
                pair = (str(mention), label)
                if pair not in answers[text]:
                    answers[text].append(pair)
    return dict(answers)


class ReplayTeacher:
    def __init__(self, type_file: Path, definition_file: Optional[Path] = None) -> None:
        self.answers = {"type": _load(type_file, definitions=False)}
        if definition_file is not None and Path(definition_file).exists():
            self.answers["definition"] = _load(definition_file, definitions=True)

    @classmethod
    def from_shared_data(cls, data_dir: Path) -> "ReplayTeacher":
        folder = Path(data_dir) / "pile-ner"
        return cls(
            folder / "pile_ner_type_subset.jsonl", folder / "pile_ner_definition_subset.jsonl"
        )

    def passages(self) -> List[str]:
        return list(self.answers["type"])

    def pairs(self, passage: str, variant: str = "type") -> List[Pair]:
        table = self.answers.get(variant, self.answers["type"])
        passage = passage.strip()
        if passage in table:
            return list(table[passage])
        if len(passage) < 40:
            return []
        for text, pairs in table.items():  # a chunk of a known passage
            if passage in text:
                return [(m, t) for m, t in pairs if m in passage]
        return []

    def reply(self, passage: str, variant: str = "type") -> str:
        return render_reply(self.pairs(passage, variant))
