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
and ask about every type of their label map; a seeded share of their passages
(``plain_share``) is asked as plain questions instead: no ``Dataset:`` field
and the natural names without catch-all tags
(:func:`spacy_uniner.evaluation.label_maps.plain_label_map`, as the dev suite
asks them).

The Pile-NER passages of the dev suite (:func:`spacy_uniner.splits.split_pile_ner`)
are left out by ``train.build_data`` unless asked for.

``lowercase_share`` turns a seeded share of the conversations into lower case
(passage and mentions; users' text is not always cased: search queries, chat,
transcripts), drawn apart from everything else, so the rest of the data is the
same as without it.

``drop_known_negatives`` drops a sampled negative type that the passage is
known to contain: one of its positive types or, for BIO passages, the raw tag
of one (``organisation``), compared after :func:`type_key` (lower case,
punctuation to spaces, a plural ``s`` off). Sampled negatives come from the
open-type passages' types; BIO passages get them only with ``bio_negatives``
and only under the dataset-specific template, where "not a type of this
dataset" is a true answer: under a plain question, a type the set never
labels (``date`` in CoNLL-2003) may well be in the text.
"""

import json
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .. import prompts
from ..evaluation.benchmarks import DEV_SUITE, SENTENCES_PER_PASSAGE, group_sentences, load_bio
from ..evaluation.label_maps import load_label_map, plain_label_map, tag_names

logger = logging.getLogger("spacy_uniner")

NEGATIVE_SAMPLING = ("none", "uniform", "frequency")
VARIANTS = ("type", "definition", "all-in-one")
# Zero-shot evaluation sets of the paper: training on them would leak the test.
_EVAL_PATTERNS = re.compile(
    r"(crossner[/\\_](ai|literature|music|politics|science)|CrossNER_|(^|[/\\])mit[/\\-]|mit-movie|mit-restaurant)",
    re.IGNORECASE,
)


@dataclass
class LabelledPassage:
    """A passage's text with its positive types and their mentions (in first-seen order).

    Training data, not a :class:`spacy_uniner.passages.Passage` (a window cut from
    a document): the text is a teacher passage (cut by the same windows the
    component reads), a Pile-NER passage or joined BIO sentences, with its labels.
    """

    id: str
    text: str
    positives: Dict[str, List[str]]
    source: str
    dataset: Optional[str] = None  # set for the dataset-specific template
    known_negatives: List[str] = field(default_factory=list)  # types labelled empty
    closed_types: Optional[List[str]] = None  # human-labelled: ask exactly these
    aliases: List[str] = field(default_factory=list)  # other names of positive types (raw tags)


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
    """Refuse the paper's zero-shot evaluation sets and the dev suite's BIO files
    unless explicitly allowed (the Pile-NER dev split is left out by the reader)."""
    if allow:
        return
    if _EVAL_PATTERNS.search(str(path)):
        raise EvalDataError(
            f"{path} looks like a zero-shot evaluation set (CrossNER / MIT); training on it "
            f"would leak the benchmark. Pass --allow-eval-data if you really mean it."
        )
    posix = Path(path).as_posix()
    for name, (fmt, rel, _) in DEV_SUITE.items():
        if fmt != "pile-ner" and posix.endswith(rel):
            raise EvalDataError(
                f"{path} is the dev suite's {name}; choices made on a set the student was "
                f"trained on mean nothing. Pass --allow-eval-data if you really mean it."
            )


def _clean_type(label: str) -> str:
    return " ".join(str(label).split())


def read_pile_ner(path: Union[str, Path]) -> List[LabelledPassage]:
    """Real ChatGPT answers (Pile-NER subset, one (passage, type) query per line).

    Queries are grouped back into passages; types answered ``[]`` become known
    negatives.
    """
    path = Path(path)
    by_doc: Dict[str, LabelledPassage] = {}
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for n, line in enumerate(content.splitlines(), 1):
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
        passage = by_doc.setdefault(doc_id, LabelledPassage(f"pile-{doc_id}", text, {}, "pile-ner"))
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


#: The source of passages labelled by a spaCy pipeline (closed types, plain questions).
SPACY_TEACHER = "spacy-teacher"


def read_teacher_rows(rows: Iterable[Dict]) -> List[LabelledPassage]:
    """Rows of the annotate step (``id``/``passage_id``, ``text``, ``entities`` as (mention, type)).

    A row with ``closed_types`` (a spaCy teacher's) is asked exactly those types, as
    plain questions: the teacher labels each of them, so an absent one is a negative
    it vouches for, and no type is sampled from the open types it never looked for.
    """
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
        closed = row.get("closed_types")
        out.append(LabelledPassage(f"teacher-{pid}", row["text"], positives,
                                   SPACY_TEACHER if closed else "teacher",
                                   closed_types=list(closed) if closed else None))
    return out


def read_teacher_output(path: Union[str, Path]) -> List[LabelledPassage]:
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
    sentences_per_passage: int = SENTENCES_PER_PASSAGE,
    limit: Optional[int] = None,
    seed: int = 0,
    allow_eval_data: bool = False,
    plain_share: float = 0.0,
) -> List[LabelledPassage]:
    """A human-labelled BIO file, consecutive sentences joined into passages
    (:func:`spacy_uniner.evaluation.benchmarks.group_sentences`, as the dev suite
    joins them).

    limit, seed: a seeded sample of passages (None: all).
    plain_share: the share of the (sampled) passages asked as plain questions
        (seeded, exactly ``round(share * n)``): no ``Dataset:`` field, the types
        of :func:`~spacy_uniner.evaluation.label_maps.plain_label_map` (catch-all tags
        such as CoNLL-2003 ``misc`` are not asked). The rest keep the
        dataset-specific template and every type of the map.
    """
    if not 0.0 <= plain_share <= 1.0:
        raise ValueError(f"plain_share must be within [0, 1], got {plain_share}")
    check_not_eval_data(path, allow_eval_data)
    mapping = load_label_map(label_map)
    bench = group_sentences(load_bio(path, label_map=mapping, name=dataset),
                            sentences_per_passage)
    plain_types: List[str] = list(bench.labels)
    aliases_of: Dict[str, List[str]] = {}
    if mapping is not None:
        plain = set(v for v in plain_label_map(mapping).values() if v)
        plain_types = [t for t in bench.labels if t in plain]
        aliases_of = tag_names(mapping)
    passages: List[LabelledPassage] = []
    for k, p in enumerate(bench.passages):
        text = p.text
        positives: Dict[str, List[str]] = {}
        for s, e, label in p.spans:
            mentions = positives.setdefault(label, [])
            if text[s:e] not in mentions:
                mentions.append(text[s:e])
        aliases = [a for t in positives for a in aliases_of.get(t, []) if a != t]
        passages.append(LabelledPassage(f"{dataset}-{k}", text, positives, dataset, dataset=dataset,
                                closed_types=list(bench.labels), aliases=aliases))
    if limit is not None and limit < len(passages):
        rng = random.Random(f"{seed}:{dataset}")
        passages = [passages[i] for i in sorted(rng.sample(range(len(passages)), limit))]
    n_plain = round(plain_share * len(passages))
    rng = random.Random(f"{seed}:{dataset}:plain")
    for i in rng.sample(range(len(passages)), n_plain):
        p = passages[i]
        p.dataset = None
        p.closed_types = list(plain_types)
        dropped = [t for t in p.positives if t not in plain_types]
        p.aliases += [t for t in dropped if t not in p.aliases]  # still known to be there
        p.positives = {t: m for t, m in p.positives.items() if t in plain_types}
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
    plain_bio_passages: int = 0  # BIO passages asked as plain questions
    dropped_known_negatives: int = 0  # sampled negatives the passage is known to contain
    lowercased: int = 0  # conversations turned into lower case
    by_source: Dict[str, int] = field(default_factory=dict)


def type_key(label: str) -> str:
    """A type compared lightly: lower case, punctuation to spaces, a plural ``s`` off
    (``Organizations`` and ``organization``, ``chemical_compound`` and ``chemical compound``)."""
    key = " ".join(re.sub(r"[\W_]+", " ", label.lower()).split())
    if len(key) > 3 and key.endswith("s") and not key.endswith("ss"):
        key = key[:-1]
    return key


def known_types(passage: LabelledPassage) -> set:
    """The :func:`type_key` of every type the passage is known to contain."""
    return {type_key(t) for t in list(passage.positives) + list(passage.aliases)}


def type_frequencies(passages: Sequence[LabelledPassage]) -> Counter:
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
    passages: Sequence[LabelledPassage],
    *,
    negative_sampling: str = "frequency",
    negatives: Optional[int] = 2,
    negative_ratio: Optional[float] = None,
    variant: str = "type",
    definitions: Optional[Dict[str, str]] = None,
    seed: int = 0,
    drop_known_negatives: bool = False,
    bio_negatives: int = 0,
    lowercase_share: float = 0.0,
) -> Tuple[List[Conversation], BuildStats]:
    """Conversations (one per passage) and what went into them.

    negatives / negative_ratio: how many negative types per open-type passage:
        a count, or a ratio of its positive types (rounded, at least 1 when the
        ratio is positive). Known negatives (types the teacher answered ``[]``)
        count towards it.
    drop_known_negatives: drop (and count) a sampled negative whose
        :func:`type_key` is that of a type the passage contains
        (:func:`known_types`); it is not replaced.
    bio_negatives: sampled negatives added to each BIO passage asked with the
        dataset-specific template (plain ones get none), beside its own types.
    lowercase_share: the seeded share of conversations whose passage and
        answers are lower-cased (the questions, type names, stay as they are).
    """
    if not 0.0 <= lowercase_share <= 1.0:
        raise ValueError(f"lowercase_share must be within [0, 1], got {lowercase_share}")
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
        k_sampled = 0
        if p.closed_types is not None:
            negs = [t for t in p.closed_types if t not in p.positives]
            stats.known_negative_queries += len(negs)
            if p.dataset is None and p.source != SPACY_TEACHER:
                stats.plain_bio_passages += 1
            else:
                k_sampled = bio_negatives
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
            k_sampled = k - len(negs)
        if k_sampled > 0 and negative_sampling != "none":
            sampled = sample_negatives(rng, freq, set(labels) | set(negs), k_sampled,
                                       negative_sampling)
            if drop_known_negatives:
                known = known_types(p)
                kept = [t for t in sampled if type_key(t) not in known]
                stats.dropped_known_negatives += len(sampled) - len(kept)
                sampled = kept
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
    if lowercase_share:
        # its own random stream: the conversations above are those of lowercase_share = 0
        picked = random.Random(f"lowercase-{seed}").sample(
            range(len(out)), round(lowercase_share * len(out)))
        for i in picked:
            out[i] = _lowercased(out[i])
        stats.lowercased = len(picked)
    stats.conversations = len(out)
    stats.by_source = dict(by_source)
    return out, stats


def _lowercased(conv: Conversation) -> Conversation:
    # a mention, or (all-in-one) a [mention, type] pair whose type stays as asked
    answers = [json.dumps([m.lower() if isinstance(m, str) else [m[0].lower(), *m[1:]]
                           for m in json.loads(a)], ensure_ascii=False)
               for a in conv.answers]
    return replace(conv, passage=conv.passage.lower(), answers=answers)


def conversations_to_dataset(conversations: Sequence[Conversation]):
    import datasets

    return datasets.Dataset.from_list([asdict(c) for c in conversations])


def iter_conversations(dataset) -> Iterator[Conversation]:
    for row in dataset:
        yield Conversation(**{k: row[k] for k in Conversation.__dataclass_fields__})
