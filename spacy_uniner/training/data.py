"""Instruction data for mission-focused tuning (paper §3.2).

One conversation per passage: the passage, then one question per entity type
(positive types with their mentions, negative types with ``[]``) in shuffled
order. Negative types are sampled ``none`` / ``uniform`` / ``frequency``
(probability proportional to the type's frequency in the whole set, the
paper's best). Variants:

* ``type``: "What describes {type} in the text?"
* ``definition``: the type replaced by its short definition
  (``../shared/data/pile-ner/type_definitions.json``);
* ``all-in-one``: one question for all types, answered with ``[mention, type]`` pairs.

Human-labelled BIO sets use the dataset-specific template (``Dataset: {name}``)
and ask about every type of their label map.
"""

import json
import logging
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .. import prompts

logger = logging.getLogger("spacy_uniner")

NEGATIVE_SAMPLING = ("none", "uniform", "frequency")
VARIANTS = ("type", "definition", "all-in-one")
# Zero-shot evaluation sets of the paper: training on them would leak the test.
_EVAL_PATTERNS = re.compile(
    r"(crossner[/\\_](ai|literature|music|politics|science)|CrossNER_|(^|[/\\])mit[/\\-]|mit-movie|mit-restaurant)",
    re.IGNORECASE,
)


@dataclass
class Passage:
    """A passage with its positive types and their mentions (in first-seen order)."""

    id: str
    text: str
    positives: Dict[str, List[str]]
    source: str
    dataset: Optional[str] = None  # set for the dataset-specific template
    known_negatives: List[str] = field(default_factory=list)  # types labelled empty
    closed_types: Optional[List[str]] = None  # human-labelled: ask exactly these


@dataclass
class Conversation:
    id: str
    source: str
    dataset: Optional[str]
    passage: str
    questions: List[str]
    answers: List[str]
    labels: List[str]  # the type behind each question
    variant: str

    def turns(self) -> List[prompts.Turn]:
        return [prompts.Turn(q, a) for q, a in zip(self.questions, self.answers)]

    def render(self) -> str:
        return prompts.render_conversation(self.passage, self.turns(), self.dataset)


class EvalDataError(ValueError):
    pass


def check_not_eval_data(path: Union[str, Path], allow: bool) -> None:
    """Refuse the paper's zero-shot evaluation sets unless explicitly allowed."""
    if not allow and _EVAL_PATTERNS.search(str(path)):
        raise EvalDataError(
            f"{path} looks like a zero-shot evaluation set (CrossNER / MIT); training on it "
            f"would leak the benchmark. Pass --allow-eval-data if you really mean it."
        )


def _clean_type(label: str) -> str:
    return " ".join(str(label).split())


def read_pile_ner(path: Union[str, Path]) -> List[Passage]:
    """Real ChatGPT answers (Pile-NER subset, one (passage, type) query per line).

    Queries are grouped back into passages; types answered ``[]`` become known
    negatives.
    """
    path = Path(path)
    by_doc: Dict[str, Passage] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = str(row["doc_question_pairID"]).split(":")[0]
            label = _clean_type(row["tagName"])
            mentions = json.loads(row["output"])
            text = row["input"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a Pile-NER query line ({err})") from None
        passage = by_doc.setdefault(doc_id, Passage(f"pile-{doc_id}", text, {}, "pile-ner"))
        if passage.text != text:
            raise ValueError(f"{path}:{n}: passage {doc_id} has two different texts")
        mentions = [m for m in mentions if isinstance(m, str) and m.strip()]
        if mentions:
            passage.positives.setdefault(label, [])
            for m in mentions:
                if m not in passage.positives[label]:
                    passage.positives[label].append(m)
        elif label not in passage.known_negatives:
            passage.known_negatives.append(label)
    return list(by_doc.values())


def read_teacher_rows(rows: Iterable[Dict]) -> List[Passage]:
    """Rows of the annotate step (``id``/``passage_id``, ``text``, ``entities`` as (mention, type))."""
    out = []
    for n, row in enumerate(rows):
        pid = str(row.get("passage_id", row.get("id", n)))
        positives: Dict[str, List[str]] = {}
        for pair in row.get("entities") or []:
            if isinstance(pair, dict):
                mention, label = pair.get("mention"), pair.get("type")
            else:
                mention, label = pair[0], pair[1]
            if not isinstance(mention, str) or not isinstance(label, str):
                continue
            label = _clean_type(label)
            mentions = positives.setdefault(label, [])
            if mention.strip() and mention not in mentions:
                mentions.append(mention)
        out.append(Passage(f"teacher-{pid}", row["text"], positives, "teacher"))
    return out


def read_teacher_output(path: Union[str, Path]) -> List[Passage]:
    """``DIR/teacher.parquet`` (or a .jsonl / .parquet file) from ``ray_jobs.annotate``."""
    path = Path(path)
    if path.is_dir():
        for name in ("teacher.parquet", "teacher.jsonl"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no teacher.parquet or teacher.jsonl inside")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return read_teacher_rows(rows)


def read_bio_passages(
    path: Union[str, Path],
    dataset: str,
    label_map: Union[str, Dict[str, Optional[str]], None],
    *,
    sentences_per_passage: int = 4,
    limit: Optional[int] = None,
    seed: int = 0,
    allow_eval_data: bool = False,
) -> List[Passage]:
    """A human-labelled BIO file, consecutive sentences joined into passages."""
    from ..benchmarks import load_bio

    check_not_eval_data(path, allow_eval_data)
    bench = load_bio(path, label_map=label_map, name=dataset)
    passages: List[Passage] = []
    group = bench.passages
    for i in range(0, len(group), sentences_per_passage):
        chunk = group[i : i + sentences_per_passage]
        text_parts, positives = [], {}
        for p in chunk:
            text = p.text
            for s, e, label in p.spans:
                mentions = positives.setdefault(label, [])
                mention = text[s:e]
                if mention not in mentions:
                    mentions.append(mention)
            text_parts.append(text)
        passages.append(
            Passage(f"{dataset}-{i // sentences_per_passage}", " ".join(text_parts), positives,
                    dataset, dataset=dataset, closed_types=list(bench.labels))
        )
    if limit is not None and limit < len(passages):
        rng = random.Random(f"{seed}:{dataset}")
        passages = [passages[i] for i in sorted(rng.sample(range(len(passages)), limit))]
    return passages


def load_definitions(path: Union[str, Path]) -> Dict[str, str]:
    """type → short definition, from SLIMER's ``type_definitions.json``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    out = {}
    for label, entry in raw.items():
        answer = entry.get("gpt_answer") if isinstance(entry, dict) else None
        try:
            definition = json.loads(answer)["Definition"] if answer else None
        except (ValueError, KeyError, TypeError):
            definition = None
        if isinstance(definition, str) and definition.strip():
            out[_clean_type(label)] = " ".join(definition.split())
    return out


@dataclass
class BuildStats:
    passages: int = 0
    conversations: int = 0
    positive_queries: int = 0
    negative_queries: int = 0
    known_negative_queries: int = 0
    sampled_negative_queries: int = 0
    mentions: int = 0
    distinct_types: int = 0
    types_without_definition: int = 0
    by_source: Dict[str, int] = field(default_factory=dict)


def type_frequencies(passages: Sequence[Passage]) -> Counter:
    """How many passages each type is positive in (open-type passages only)."""
    freq: Counter = Counter()
    for p in passages:
        if p.closed_types is None:
            freq.update(p.positives.keys())
    return freq


def sample_negatives(
    rng: random.Random,
    freq: Counter,
    exclude: Iterable[str],
    k: int,
    strategy: str,
) -> List[str]:
    """k distinct types not in ``exclude``: uniform or frequency-weighted, without replacement."""
    if strategy == "none" or k <= 0:
        return []
    excluded = set(exclude)
    candidates = [t for t in freq if t not in excluded]
    chosen: List[str] = []
    if strategy == "uniform":
        return rng.sample(candidates, min(k, len(candidates)))
    weights = [float(freq[t]) for t in candidates]
    for _ in range(min(k, len(candidates))):
        pick = rng.choices(range(len(candidates)), weights=weights)[0]
        chosen.append(candidates[pick])
        weights[pick] = 0.0
        if not any(weights):
            break
    return chosen


def build_conversations(
    passages: Sequence[Passage],
    *,
    negative_sampling: str = "frequency",
    negatives: Optional[int] = 2,
    negative_ratio: Optional[float] = None,
    variant: str = "type",
    definitions: Optional[Dict[str, str]] = None,
    seed: int = 0,
) -> Tuple[List[Conversation], BuildStats]:
    """Conversations (one per passage) and what went into them.

    negatives / negative_ratio: how many negative types per open-type passage:
        a count, or a ratio of its positive types (rounded, at least 1 when the
        ratio is positive). Known negatives (types the teacher answered ``[]``)
        count towards it.
    """
    if negative_sampling not in NEGATIVE_SAMPLING:
        raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    if variant == "definition" and not definitions:
        raise ValueError("the definition variant needs type definitions")
    rng = random.Random(seed)
    freq = type_frequencies(passages)
    stats = BuildStats(passages=len(passages), distinct_types=len(freq))
    by_source: Counter = Counter()
    out: List[Conversation] = []
    for p in passages:
        labels: List[str] = list(p.positives)
        if p.closed_types is not None:
            negs = [t for t in p.closed_types if t not in p.positives]
            stats.known_negative_queries += len(negs)
        else:
            if negative_ratio is not None:
                k = round(negative_ratio * len(labels))
                if negative_ratio > 0:
                    k = max(k, 1)
            else:
                k = negatives or 0
            if negative_sampling == "none":
                k = 0
            negs = list(p.known_negatives[:k])
            stats.known_negative_queries += len(negs)
            sampled = sample_negatives(rng, freq, set(labels) | set(negs), k - len(negs),
                                       negative_sampling)
            stats.sampled_negative_queries += len(sampled)
            negs += sampled
        if not labels and not negs:
            continue
        stats.positive_queries += len(labels)
        stats.negative_queries += len(negs)
        stats.mentions += sum(len(m) for m in p.positives.values())
        all_labels = labels + negs
        rng.shuffle(all_labels)
        answers = {t: json.dumps(p.positives.get(t, []), ensure_ascii=False) for t in all_labels}
        if variant == "all-in-one":
            pairs = [[m, t] for t in all_labels for m in p.positives.get(t, [])]
            questions = [prompts.all_in_one_question(all_labels)]
            answer_list = [json.dumps(pairs, ensure_ascii=False)]
            labels_out = [", ".join(all_labels)]
        else:
            questions, labels_out = [], []
            for t in all_labels:
                asked = t
                if variant == "definition":
                    asked = definitions.get(t) if definitions else None
                    if asked is None:
                        stats.types_without_definition += 1
                        asked = t
                questions.append(prompts.question(asked))
                labels_out.append(t)
            answer_list = [answers[t] for t in all_labels]
        out.append(Conversation(p.id, p.source, p.dataset, p.text, questions, answer_list,
                                labels_out, variant))
        by_source[p.source] += 1
    stats.conversations = len(out)
    stats.by_source = dict(by_source)
    return out, stats


def conversations_to_dataset(conversations: Sequence[Conversation]):
    import datasets

    return datasets.Dataset.from_list([asdict(c) for c in conversations])


def iter_conversations(dataset) -> Iterator[Conversation]:
    for row in dataset:
        yield Conversation(**{k: row[k] for k in Conversation.__dataclass_fields__})
