"""Benchmark files → passages with gold spans → spaCy Examples.

Loaders
  * :func:`load_uniner_json`: UniversalNER's evaluation files (one
    conversation per passage × type). Consecutive queries about the same text
    are grouped back into one passage (a new passage starts when the text
    changes or a type repeats). Gold mentions become character spans through
    :func:`spacy_uniner.alignment.find_mentions` — every occurrence, as the
    component does; mentions that are not in the text are counted. The raw
    gold answer of each query is kept for UniNER's string metric.
  * :func:`load_bio`: token-level BIO files, ``token<TAB>tag`` or
    ``tag<TAB>token`` (detected or given), IOB1 or IOB2 (also BIOES/BILOU),
    raw tags mapped to natural-language types by a label map
    (:mod:`.label_maps`). The text is the tokens joined by single
    spaces, like UniversalNER's pre-tokenised passages, and reference Docs
    keep exactly the given tokens.
  * :func:`zero_shot_suite`: the paper's zero-shot datasets (CrossNER AI,
    literature, music, politics, science; MIT Movie, built from the BIO file
    because UniversalNER never released its JSON; MIT Restaurant).
  * :func:`dev_suite`: where modelling choices are made (:data:`DEV_SUITE`):
    the held-out Pile-NER passages (:func:`load_pile_ner_dev`, each asked only
    its own queried types) and CoNLL-2003 / BC5CDR dev as plain questions,
    :data:`SENTENCES_PER_PASSAGE` sentences per passage
    (:func:`group_sentences`, the grouping training uses).

Running a pipeline over a benchmark is :mod:`.runner`.
"""

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, SpanGroup

from ..alignment import find_mentions
from ..prompts import question_label
from .label_maps import (
    LabelMap,
    load_label_map,
    map_tag,
    plain_label_map,
    read_json_file,
    suggest_label_maps,
)
from .scoring import GOLD_KEY

logger = logging.getLogger("spacy_uniner")

CharSpan = Tuple[int, int, str]
_TAG = re.compile(r"^(O|[BIESLU][-_].+)$")


# --- data model ----------------------------------------------------------------------


@dataclass
class GoldPassage:
    """One benchmark passage: its tokens, its gold spans, and the raw gold answer per type.

    Not a :class:`spacy_uniner.passages.Passage` (a window cut from a document for
    the model to read): a benchmark passage is given, already tokenised, with its
    answers; its ``text`` is its tokens joined, and the component cuts that text
    into windows like any other.
    """

    id: str
    words: List[str]
    spaces: List[bool]
    spans: List[CharSpan]
    answers: Dict[str, str]  # type -> gold answer as a JSON list (UniNER's format)
    # The types asked of this passage when they are not the benchmark's (Pile-NER:
    # the gold is complete for the queried types only); None: the benchmark's labels.
    labels: Optional[List[str]] = None

    @property
    def text(self) -> str:
        return "".join(w + (" " if sp else "") for w, sp in zip(self.words, self.spaces))


@dataclass
class Benchmark:
    """A dataset ready for evaluation: the types to ask about and its passages."""

    name: str
    labels: List[str]
    passages: List[GoldPassage]
    source: str = ""
    stats: Counter = field(default_factory=Counter)

    def labels_of(self, passage: GoldPassage) -> List[str]:
        """The types asked of ``passage``: its own, else the benchmark's."""
        return self.labels if passage.labels is None else passage.labels

    def sample(self, limit: Optional[int], seed: int = 0) -> "Benchmark":
        """A deterministic sample of ``limit`` passages (file order kept)."""
        keep = sample_indices(len(self.passages), limit, seed, self.name)
        if keep is None:
            return self
        stats = Counter(self.stats)
        stats["passages_in_file"] = len(self.passages)
        return Benchmark(
            self.name, list(self.labels), [self.passages[i] for i in keep], self.source, stats
        )

    def reference_doc(
        self, passage: GoldPassage, vocab: Any, spans_key: str = "universal_ner"
    ) -> Doc:
        """The gold Doc: the given tokens, gold spans in ``doc.spans[spans_key]``,
        and the raw gold answers in ``doc.user_data["uniner_gold"]``."""
        doc = Doc(vocab, words=passage.words, spaces=passage.spaces)
        spans = []
        for start, end, label in passage.spans:
            span = doc.char_span(start, end, label=label, alignment_mode="expand")
            if span is None:  # only possible for spans over whitespace
                raise ValueError(
                    f"Gold span {(start, end, label)} of {passage.id} is not alignable")
            spans.append(span)
        doc.spans[spans_key] = SpanGroup(doc, name=spans_key, spans=spans)
        doc.user_data[GOLD_KEY] = dict(passage.answers)
        return doc

    def predicted_doc(self, passage: GoldPassage, vocab: Any) -> Doc:
        """An unannotated Doc with the passage's tokens (what the pipeline reads)."""
        return Doc(vocab, words=passage.words, spaces=passage.spaces)


def sample_indices(n: int, limit: Optional[int], seed: int, name: str) -> Optional[List[int]]:
    """Sorted indices of a seeded sample of ``limit`` out of ``n`` (None: keep all).

    The seed is combined with the dataset name, so datasets get different but
    reproducible samples.
    """
    if limit is None or limit >= n:
        return None
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    return sorted(random.Random(f"{seed}:{name}").sample(range(n), limit))


def _words_of(text: str) -> Tuple[List[str], List[bool]]:
    """Whitespace tokens of ``text`` such that the Doc's text equals ``text``
    (runs of whitespace other than one space stay as whitespace tokens)."""
    words: List[str] = []
    spaces: List[bool] = []
    for m in re.finditer(r"\S+|\s+", text):
        piece = m.group()
        if piece.isspace():
            if words and not spaces[-1] and piece.startswith(" "):
                spaces[-1] = True
                piece = piece[1:]
            if piece:
                words.append(piece)
                spaces.append(False)
        else:
            words.append(piece)
            spaces.append(False)
    return words, spaces


# --- UniNER JSON ---------------------------------------------------------------------


def _conversation_parts(item: Any, where: str) -> Tuple[str, str, str]:
    conv = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(conv, list) or len(conv) < 4:
        raise ValueError(f"{where}: expected 'conversations' with 4 turns, got {item!r:.200}")
    if not all(isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in conv):
        raise ValueError(f"{where}: every turn needs a 'value' string, got {conv!r:.200}")
    first = conv[0]["value"]
    if not first.startswith("Text: "):
        raise ValueError(f"{where}: first turn should start with 'Text: ', got {first[:80]!r}")
    text = first[len("Text: "):]
    label = question_label(conv[-2]["value"])
    if label is None:
        raise ValueError(f"{where}: not a 'What describes ... in the text?' question: "
                         f"{conv[-2]['value'][:120]!r}")
    return text, label, conv[-1]["value"]


def load_uniner_json(
    path: Union[str, Path], name: Optional[str] = None, *, limit: Optional[int] = None,
    seed: int = 0,
) -> Benchmark:
    """Load a UniversalNER evaluation file and group its queries into passages.

    path: a JSON list of ``{"id", "conversations"}``; the last turn is the gold
        JSON list of mentions for the type asked in the turn before it.
    name: the dataset name (default: the file name without extension).
    limit, seed: keep a seeded sample of passages (the same sample as
        ``Benchmark.sample(limit, seed)``), aligned only those.
    """
    path = Path(path)
    data = read_json_file(path)
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of conversations, got a JSON {type(data).__name__}"
        )
    bench = Benchmark(name or path.stem, [], [], str(path))
    labels: Dict[str, None] = {}
    current: Optional[Dict[str, Any]] = None
    groups: List[Dict[str, Any]] = []
    for n, item in enumerate(data):
        text, label, answer = _conversation_parts(item, f"{path}[{n}]")
        labels.setdefault(label, None)
        if current is None or current["text"] != text or label in current["answers"]:
            current = {"text": text, "answers": {}, "first_id": str(item.get("id", n))}
            groups.append(current)
        current["answers"][label] = answer
    bench.labels = list(labels)
    keep = sample_indices(len(groups), limit, seed, bench.name)
    if keep is not None:
        bench.stats["passages_in_file"] = len(groups)
        groups = [groups[i] for i in keep]
    for g in groups:
        words, spaces = _words_of(g["text"])
        _add_answered_passage(bench, GoldPassage(g["first_id"], words, spaces, [], g["answers"]))
    bench.stats["passages"] = len(bench.passages)
    bench.stats["queries"] = sum(len(p.answers) for p in bench.passages)
    return bench


def _add_answered_passage(bench: Benchmark, passage: GoldPassage) -> None:
    """Gold spans from the passage's answers (every occurrence of each mention), then
    append it; mentions not in the text and unparseable answers are counted."""
    text = passage.text
    spans = set()
    for label, answer in passage.answers.items():
        try:
            mentions = json.loads(answer)
        except json.JSONDecodeError:
            bench.stats["gold_unparseable"] += 1
            continue
        for mention in dict.fromkeys(m for m in mentions if isinstance(m, str)):
            found = find_mentions(text, mention)
            if not found:
                bench.stats["gold_mentions_not_found"] += 1
                logger.info("%s: gold %r (%s) not in passage %s", bench.name, mention, label,
                            passage.id)
            for s, e in found:
                spans.add((s, e, label))
    passage.spans = sorted(spans)
    bench.stats["gold_spans"] += len(spans)
    bench.passages.append(passage)


# --- Pile-NER (the dev split) --------------------------------------------------------


def load_pile_ner_dev(
    path: Union[str, Path], name: str = "pile-ner-dev", *, limit: Optional[int] = None,
    seed: int = 0,
) -> Benchmark:
    """The held-out Pile-NER passages (:func:`spacy_uniner.splits.split_pile_ner`).

    path: the Pile-NER query file (one (passage, type) query per line with
        ChatGPT's answer).
    Each passage is asked only the types it was queried about (1-7, in
    ``GoldPassage.labels``): the file's answers list every mention of a queried
    type but not every entity of the passage, so other types cannot be scored.
    ``Benchmark.labels`` is the union, for reports. limit, seed: as
    ``Benchmark.sample``.
    """
    from ..splits import PILE_DEV_FRACTION, PILE_DEV_SEED, split_pile_ner
    from ..training.data import read_pile_ner

    path = Path(path)
    split = split_pile_ner(read_pile_ner(path))
    source = (f"{path} (dev split: {PILE_DEV_FRACTION:.0%} of passages by text, "
              f"seed {PILE_DEV_SEED})")
    bench = Benchmark(name, [], [], source)
    held_out = split.dev
    keep = sample_indices(len(held_out), limit, seed, name)
    if keep is not None:
        bench.stats["passages_in_file"] = len(held_out)
        held_out = [held_out[i] for i in keep]
    labels: Dict[str, None] = {}
    for p in held_out:
        asked = list(p.positives) + [t for t in p.known_negatives if t not in p.positives]
        labels.update(dict.fromkeys(asked))
        words, spaces = _words_of(p.text)
        answers = {t: json.dumps(p.positives.get(t, []), ensure_ascii=False) for t in asked}
        _add_answered_passage(bench, GoldPassage(p.id, words, spaces, [], answers, labels=asked))
    bench.labels = list(labels)
    bench.stats["passages"] = len(bench.passages)
    bench.stats["queries"] = sum(len(p.answers) for p in bench.passages)
    return bench


# --- BIO -----------------------------------------------------------------------------

COLUMN_ORDERS = ("auto", "token-tag", "tag-token")


def _read_rows(path: Path) -> Tuple[List[List[Tuple[str, str]]], List[int]]:
    """The sentences of a BIO file as (column 1, column 2) rows, and the line each starts on."""
    sentences: List[List[Tuple[str, str]]] = []
    starts: List[int] = []
    current: List[Tuple[str, str]] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start} of the "
                    f"line)"
                ) from None
            if not line.strip():
                if current:
                    sentences.append(current)
                    current = []
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if len(cols) < 2:
                raise ValueError(f"{path}:{lineno}: expected two columns, got {line!r}")
            if not current:
                starts.append(lineno)
            current.append((cols[0], cols[-1]))
    if current:
        sentences.append(current)
    return sentences, starts


def detect_column_order(sentences: Sequence[Sequence[Tuple[str, str]]], limit: int = 5000) -> str:
    """``"token-tag"`` or ``"tag-token"``: the column whose values all look like tags."""
    firsts, seconds = [], []
    for sent in sentences:
        for a, b in sent:
            firsts.append(a)
            seconds.append(b)
        if len(firsts) >= limit:
            break

    def share(values: List[str]) -> float:
        return sum(bool(_TAG.match(v)) for v in values) / max(len(values), 1)

    first, second = share(firsts), share(seconds)
    if second == 1.0 and first < 1.0:
        return "token-tag"
    if first == 1.0 and second < 1.0:
        return "tag-token"
    raise ValueError(
        f"Cannot tell which column holds the tags (tag-like share: first column {first:.2f}, "
        f"second {second:.2f}); give the order (--format bio for token<TAB>tag, "
        f"bio-rev for tag<TAB>token)"
    )


def bio_entities(tags: Sequence[str]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Decode token tags into (start, end, raw type) entities.

    Accepts IOB2 (every entity starts with ``B-``), IOB1 (``I-`` starts an
    entity unless it continues one of the same type; ``B-`` only splits two
    adjacent entities) and BIOES/BILOU. RETURNS the entities and how many tags
    began an entity with ``I-`` (non-zero means IOB1 or damaged IOB2).
    """
    entities: List[Tuple[int, int, str]] = []
    start, etype = -1, ""
    i_starts = 0

    def close(end: int) -> None:
        nonlocal start, etype
        if start >= 0:
            entities.append((start, end, etype))
        start, etype = -1, ""

    for i, tag in enumerate(tags):
        if tag == "O" or not _TAG.match(tag):
            if tag != "O":
                raise ValueError(f"Not a BIO tag at token {i}: {tag!r}")
            close(i)
            continue
        prefix, raw = tag[0], tag[2:]
        if prefix in "BSU":
            close(i)
            start, etype = i, raw
            if prefix in "SU":
                close(i + 1)
        else:  # I, E, L
            if start < 0 or etype != raw:
                close(i)
                start, etype = i, raw
                i_starts += 1
            if prefix in "EL":
                close(i + 1)
    close(len(tags))
    return entities, i_starts


def _refuse_tag_codes(path: Path, tags: List[str]) -> None:
    """Without a label map the student is asked about the raw tags themselves: refuse
    a tag set of codes in capitals ("What describes PER in the text?" scores 0)."""
    if not tags or not all(tag.isupper() for tag in tags):
        return
    fits = suggest_label_maps(tags)
    builtin = (f"--label-map {fits[0]} (label_map={fits[0]!r} in Python)" if fits
               else "--label-map with a JSON file")
    named = f"tags {', '.join(sorted(tags))} are" if len(tags) > 1 else f"tag {tags[0]} is"
    raise ValueError(
        f"{path}: the {named} dataset codes, not entity types: "
        f"without a label map the student would be asked \"What describes {tags[0]} in the "
        f"text?\". Give a label map: {builtin}, or a JSON file mapping each tag to a type, "
        f"e.g. {{\"{tags[0]}\": \"<the type in words>\"}} (a tag mapped to itself is asked "
        f"as it is)."
    )


def load_bio(
    path: Union[str, Path],
    *,
    column_order: str = "auto",
    label_map: Union[None, str, Path, Dict[str, Optional[str]]] = None,
    name: Optional[str] = None,
    scheme: str = "auto",
    limit: Optional[int] = None,
    seed: int = 0,
) -> Benchmark:
    """Load a BIO file as passages (one per sentence) with gold char spans.

    column_order: "auto" (detect), "token-tag" or "tag-token".
    label_map: raw tag → type (a built-in name, a JSON path or a dict; None
        keeps raw tags, unless every one is a code in capitals such as ``PER``:
        that is refused, suggesting a map); a tag mapped to null is dropped.
    name: the dataset name (default: the parent folder and file stem).
    scheme: "auto", "iob1" or "iob2"; with "iob2", entities that begin with
        ``I-`` are counted as ``invalid_iob2`` and logged (they are still kept).
    limit, seed: keep a seeded sample of sentences (as ``Benchmark.sample``).
        The types asked are still those of the whole file.
    """
    path = Path(path)
    if column_order not in COLUMN_ORDERS:
        raise ValueError(f"column_order must be one of {COLUMN_ORDERS}, got {column_order!r}")
    if scheme not in ("auto", "iob1", "iob2"):
        raise ValueError(f"scheme must be 'auto', 'iob1' or 'iob2', got {scheme!r}")
    mapping: Optional[LabelMap] = load_label_map(label_map)
    rows, starts_at = _read_rows(path)
    try:
        order = detect_column_order(rows) if column_order == "auto" else column_order
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    bench = Benchmark(name or f"{path.parent.name}-{path.stem}", [], [], str(path))
    warned: set = set()
    seen_labels: Dict[str, None] = {}
    mentions_of: List[Dict[str, List[str]]] = []
    keep = sample_indices(len(rows), limit, seed, bench.name)
    for n, sent in enumerate(rows):
        if order == "token-tag":
            words = [t for t, _ in sent]
            tags = [g for _, g in sent]
        else:
            words = [t for _, t in sent]
            tags = [g for g, _ in sent]
        try:
            entities, i_starts = bio_entities(tags)
        except ValueError as err:
            raise ValueError(
                f"{path}:{starts_at[n]} (sentence {n}): {err} (column order {order}; give the "
                f"other order if the columns are swapped)"
            ) from None
        bench.stats["i_starts"] += i_starts
        spaces = [True] * len(words)
        spaces[-1] = False
        starts, pos = [], 0
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        passage = GoldPassage(f"{bench.name}-{n}", words, spaces, [], {})
        mentions: Dict[str, List[str]] = {}
        for s, e, raw in entities:
            label = map_tag(raw, mapping, warned)
            if label is None:
                bench.stats["dropped_entities"] += 1
                continue
            seen_labels.setdefault(label, None)
            passage.spans.append((starts[s], starts[e - 1] + len(words[e - 1]), label))
            mentions.setdefault(label, []).append(" ".join(words[s:e]))
        passage.spans.sort()
        mentions_of.append(mentions)
        bench.passages.append(passage)
    if mapping is None:
        _refuse_tag_codes(path, list(seen_labels))
    if keep is not None:  # decode every sentence first: the types asked are the file's
        bench.stats["passages_in_file"] = len(rows)
        bench.passages = [bench.passages[i] for i in keep]
        mentions_of = [mentions_of[i] for i in keep]
    bench.stats["gold_spans"] = sum(len(p.spans) for p in bench.passages)
    if scheme == "iob2" and bench.stats["i_starts"]:
        logger.warning("%s: %d entities begin with I- (not IOB2)", path, bench.stats["i_starts"])
        bench.stats["invalid_iob2"] = bench.stats["i_starts"]
    # The types asked: the label map's order (those present), then unmapped ones.
    if mapping is not None:
        mapped = dict.fromkeys(v for v in mapping.values() if v)
        ordered = [lab for lab in mapped if lab in seen_labels]
        ordered += [lab for lab in seen_labels if lab not in ordered]
    else:
        ordered = sorted(seen_labels)
    bench.labels = ordered
    for passage, mentions in zip(bench.passages, mentions_of):
        passage.answers = {lab: json.dumps(mentions.get(lab, [])) for lab in ordered}
    bench.source = f"{path} ({order})"
    bench.stats["passages"] = len(bench.passages)
    bench.stats["queries"] = len(bench.passages) * len(ordered)
    return bench


#: Consecutive BIO sentences joined into one passage, for training and the dev suite.
SENTENCES_PER_PASSAGE = 4


def group_sentences(bench: Benchmark, size: int = SENTENCES_PER_PASSAGE) -> Benchmark:
    """Join every ``size`` consecutive passages (BIO sentences) into one.

    The text is the sentences joined by single spaces (what training reads:
    :func:`spacy_uniner.training.data.read_bio_passages` uses this); spans move
    with their sentence and the gold answers are concatenated per type. Group
    ``k`` is ``{name}-g{k}``. Group before sampling, so that a sample is of
    passages.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if size == 1:
        return bench
    out = Benchmark(bench.name, list(bench.labels), [], f"{bench.source}, {size} sentences "
                    f"per passage", Counter(bench.stats))
    for k, i in enumerate(range(0, len(bench.passages), size)):
        chunk = bench.passages[i:i + size]
        words: List[str] = []
        spaces: List[bool] = []
        spans: List[CharSpan] = []
        mentions: Dict[str, List[str]] = {}
        offset = 0
        for p in chunk:
            if words:
                spaces[-1] = True
                offset += 1
            spans += [(s + offset, e + offset, label) for s, e, label in p.spans]
            for label, answer in p.answers.items():
                mentions.setdefault(label, []).extend(json.loads(answer))
            offset += len(p.text)
            words += p.words
            spaces += p.spaces
        answers = {label: json.dumps(m) for label, m in mentions.items()}
        out.passages.append(GoldPassage(f"{bench.name}-g{k}", words, spaces, spans, answers))
    out.stats["sentences"] = len(bench.passages)
    out.stats["passages"] = len(out.passages)
    out.stats["queries"] = sum(len(out.labels_of(p)) for p in out.passages)
    return out


# --- the zero-shot suite -------------------------------------------------------------

#: Paper column → (dataset name, format, path relative to the shared data folder).
ZERO_SHOT: Dict[str, Tuple[str, str, str]] = {
    "Movie": ("mit-movie", "bio-rev", "benchmarks/bio/mit/movie/test.txt"),
    "Restaurant": ("mit-restaurant", "uniner", "benchmarks/uniner/mit-restaurant.json"),
    "AI": ("CrossNER_AI", "uniner", "benchmarks/uniner/CrossNER_AI.json"),
    "Literature": ("CrossNER_literature", "uniner", "benchmarks/uniner/CrossNER_literature.json"),
    "Music": ("CrossNER_music", "uniner", "benchmarks/uniner/CrossNER_music.json"),
    "Politics": ("CrossNER_politics", "uniner", "benchmarks/uniner/CrossNER_politics.json"),
    "Science": ("CrossNER_science", "uniner", "benchmarks/uniner/CrossNER_science.json"),
}
#: Built-in label maps for the suite's BIO files.
ZERO_SHOT_LABEL_MAPS = {"mit-movie": "mit_movie"}
DOMAINS = {"CrossNER": ["AI", "Literature", "Music", "Politics", "Science"],
           "MIT": ["Movie", "Restaurant"]}

#: UniversalNER paper (arXiv:2308.03279v2), zero-shot F1 with the string metric,
#: Tab. 3 (rows ChatGPT, UniNER-7B, UniNER-13B); partial match from Tab. 5.
PAPER_ZERO_SHOT: Dict[str, Dict[str, float]] = {
    "ChatGPT": {"Movie": 5.3, "Restaurant": 32.8, "AI": 52.4, "Literature": 39.8,
                "Music": 66.6, "Politics": 68.5, "Science": 67.0, "Avg": 47.5},
    "UniNER-7B": {"Movie": 42.4, "Restaurant": 31.7, "AI": 53.5, "Literature": 59.4,
                  "Music": 65.0, "Politics": 60.8, "Science": 61.1, "Avg": 53.4},
    "UniNER-13B": {"Movie": 48.7, "Restaurant": 36.2, "AI": 54.2, "Literature": 60.9,
                   "Music": 64.5, "Politics": 61.4, "Science": 63.5, "Avg": 55.6},
}
PAPER_PARTIAL: Dict[str, Dict[str, float]] = {
    "ChatGPT": {"Movie": 5.9, "Restaurant": 40.1, "AI": 55.7, "Literature": 42.8,
                "Music": 70.2, "Politics": 71.7, "Science": 70.1, "Avg": 50.9},
    "UniNER-7B": {"Movie": 46.9, "Restaurant": 40.3, "AI": 57.7, "Literature": 62.7,
                  "Music": 62.9, "Politics": 63.2, "Science": 63.3, "Avg": 56.7},
}


def load_benchmark(
    path: Union[str, Path],
    fmt: str,
    *,
    name: Optional[str] = None,
    label_map: Union[None, str, Path, Dict[str, Optional[str]]] = None,
    limit: Optional[int] = None,
    seed: int = 0,
) -> Benchmark:
    """Load any benchmark file: ``fmt`` is "uniner", "bio" (column order
    detected) or "bio-rev" (``tag<TAB>token``)."""
    if fmt == "uniner":
        if label_map is not None:
            raise ValueError("A label map applies to BIO files; UniNER JSON files name their types")
        return load_uniner_json(path, name, limit=limit, seed=seed)
    if fmt in ("bio", "bio-rev"):
        order = "auto" if fmt == "bio" else "tag-token"
        return load_bio(path, column_order=order, label_map=label_map, name=name,
                        limit=limit, seed=seed)
    raise ValueError(f"Unknown format {fmt!r}; use uniner, bio or bio-rev")


def zero_shot_suite(
    shared_data: Union[str, Path], *, limit: Optional[int] = None, seed: int = 0,
    columns: Optional[Sequence[str]] = None,
) -> Dict[str, Benchmark]:
    """The paper's zero-shot datasets, keyed by the paper's column name.

    limit, seed: a seeded sample of passages per dataset.
    columns: only these columns (default: all seven).
    """
    root = Path(shared_data)
    return {
        column: load_benchmark(root / rel, fmt, name=name, limit=limit, seed=seed,
                               label_map=ZERO_SHOT_LABEL_MAPS.get(name))
        for column, (name, fmt, rel) in ZERO_SHOT.items()
        if columns is None or column in columns
    }


# --- the dev suite -------------------------------------------------------------------

#: Where every modelling choice is made (DESIGN.md, "Dev suite vs test suite"): dataset
#: name → (format, path under the shared data folder, label map). No zero-shot test file
#: (CrossNER domains, MIT) is here. The BIO sets are asked as plain questions: natural
#: type names without catch-all tags (:func:`.label_maps.plain_label_map`;
#: CoNLL-2003 ``misc`` is left out) and no ``Dataset:`` field.
DEV_SUITE: Dict[str, Tuple[str, str, Optional[str]]] = {
    "pile-ner-dev": ("pile-ner", "pile-ner/pile_ner_type_subset.jsonl", None),
    "conll2003-dev": ("bio", "benchmarks/bio/crossner/conll2003/dev.txt", "conll2003"),
    "bc5cdr-dev": ("bio", "benchmarks/bio/bc5cdr/devel.tsv", "bc5cdr"),
}
#: Seeded passages per dev set when no limit is given (Pile-NER's dev split has fewer:
#: all of them are asked).
DEV_LIMIT = 200


def dev_suite(
    shared_data: Union[str, Path], *, limit: Optional[int] = DEV_LIMIT, seed: int = 0,
    columns: Optional[Sequence[str]] = None, wide: bool = False,
) -> Dict[str, Benchmark]:
    """The dev suite's datasets, keyed by their names (:data:`DEV_SUITE`).

    limit, seed: a seeded sample of passages per dataset (None: every passage).
    columns: only these datasets (default: all three).
    wide: ask every BIO set the types of all of them (:func:`widen`); the sets are
        then named ``{name}-wide`` (``columns`` still takes the plain names).
    """
    def load(name: str, fmt: str, rel: str, label_map: Optional[str]) -> Benchmark:
        path = Path(shared_data) / rel
        if fmt == "pile-ner":
            return load_pile_ner_dev(path, name, limit=limit, seed=seed)
        bench = load_bio(path, label_map=plain_label_map(label_map), name=name)
        return group_sentences(bench).sample(limit, seed)

    suite = {name: load(name, *spec) for name, spec in DEV_SUITE.items()
             if columns is None or name in columns}
    return widen_suite(suite, shared_data) if wide else suite


def widen_suite(suite: Dict[str, Benchmark], shared_data: Union[str, Path]) -> Dict[str, Benchmark]:
    """A plain dev suite (:func:`dev_suite`) with each BIO set widened (:func:`widen`)."""
    bio = {name: spec for name, spec in DEV_SUITE.items() if spec[0] == "bio"}
    # every BIO set's types, also those of sets left out by ``columns``
    extra = [label for name, (_, rel, label_map) in bio.items()
             for label in (suite[name] if name in suite else load_bio(
                 Path(shared_data) / rel, label_map=plain_label_map(label_map), limit=1)).labels]
    return {(f"{name}-wide" if name in bio else name):
            (widen(bench, extra) if name in bio else bench) for name, bench in suite.items()}


def widen(bench: Benchmark, labels: Sequence[str]) -> Benchmark:
    """``bench`` asked its own types and then ``labels``, as ``{name}-wide``.

    The zero-shot suite asks 8-16 types of each passage, most of them absent; the
    plain dev sets ask 2-3. Asked the other dev sets' types (news: chemical, disease;
    biomedical abstracts: person, location, organization), a passage's gold for them
    is empty by its annotation guidelines, so a student that answers where nothing is
    loses precision here as it does on the zero-shot suite. (An abstract that does
    name a place or an agency is scored as if it did not: the guidelines never
    labelled those.)
    """
    ordered = list(dict.fromkeys([*bench.labels, *labels]))
    passages = [
        GoldPassage(p.id, p.words, p.spaces, p.spans,
                    {label: p.answers.get(label, "[]") for label in ordered})
        for p in bench.passages
    ]
    stats = Counter(bench.stats)
    stats["queries"] = len(ordered) * len(passages)
    return Benchmark(f"{bench.name}-wide", ordered, passages,
                     f"{bench.source}; asked {', '.join(ordered)}", stats)


def _lower_keeping_length(text: str) -> str:
    # a character whose lower case is longer (U+0130) stays: gold offsets must hold
    return "".join(lo if len(lo) == 1 else c for c, lo in ((c, c.lower()) for c in text))


def lowercased(bench: Benchmark) -> Benchmark:
    """``bench`` with its text and gold mentions in lower case, as ``{name}-lower``
    (users' text is not always cased: search queries, chat, transcripts). The gold
    spans keep their offsets."""
    passages = []
    for p in bench.passages:
        answers = {label: json.dumps([_lower_keeping_length(m) for m in json.loads(answer)],
                                     ensure_ascii=False)
                   for label, answer in p.answers.items()}
        passages.append(GoldPassage(p.id, [_lower_keeping_length(w) for w in p.words],
                                    list(p.spaces), list(p.spans), answers, p.labels))
    return Benchmark(f"{bench.name}-lower", list(bench.labels), passages,
                     f"{bench.source}; in lower case", Counter(bench.stats))
