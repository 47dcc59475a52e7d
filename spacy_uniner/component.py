"""The ``universal_ner`` pipeline component.

For every document the component cuts the text into windows of at most
``max_passage_tokens`` student tokens, asks the student one UniNER question
per (window, label), parses each JSON reply, finds every occurrence of every
mention in its window, and writes

* ``doc.spans[spans_key]``: every (start, end, label) once, overlaps kept, with
  ``attrs["scores"]`` aligned (the spancat convention);
* ``doc.ents`` (if ``write_ents``): a non-overlapping subset chosen by
  ``ents_policy``; entities already on the doc are kept unless
  ``overwrite_ents``.

A span's score is the geometric-mean probability of the reply tokens that
spell the mention (the highest over windows where it was found more than once).
"""

import logging
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example

from . import prompts
from .alignment import find_mentions
from .models.base import Generation, Student
from .parsing import parse_student_reply
from .passages import make_windows
from .weights import read_bundle, weights_owner, write_bundle

logger = logging.getLogger("spacy_uniner")

ENTS_POLICIES = ("score", "longest", "first")
DEFAULT_MODEL_CONFIG = {"@uniner_models": "spacy_uniner.HFStudent.v2", "name": "default"}


@Language.factory(
    "universal_ner",
    assigns=["doc.ents", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL_CONFIG,
        "labels": [],
        "spans_key": "universal_ner",
        "write_ents": True,
        "overwrite_ents": False,
        "ents_policy": "score",
        "threshold": None,
        "multi_label": None,
        "max_passage_tokens": 256,
        "window_overlap": 32,
        "dataset": None,
        "label_definitions": {},
        "store_replies": False,
        "bundle_weights": False,
        "scorer": {"@scorers": "spacy_uniner.scorer.v2"},
    },
    default_score_weights={
        "spans_universal_ner_f": 1.0,
        "spans_universal_ner_p": 0.0,
        "spans_universal_ner_r": 0.0,
    },
)
def make_universal_ner(
    nlp: Language,
    name: str,
    model: Student,
    labels: List[str],
    spans_key: str,
    write_ents: bool,
    overwrite_ents: bool,
    ents_policy: str,
    threshold: Optional[float],
    multi_label: Optional[bool],
    max_passage_tokens: int,
    window_overlap: int,
    dataset: Optional[str],
    label_definitions: Dict[str, str],
    store_replies: bool,
    bundle_weights: bool,
    scorer: Optional[Callable],
) -> "UniversalNER":
    """Open-type NER with a UniNER-style student.

    model (Student): the backend, e.g. ``spacy_uniner.HFStudent.v2``.
    labels (List[str]): entity types in natural language; can be replaced per
        call with ``component_cfg={"universal_ner": {"labels": [...]}}``.
    spans_key (str): the span group that receives every typed span; a group
        already under this key on an incoming Doc is extended, not replaced.
    write_ents (bool): also write a non-overlapping subset to ``doc.ents``.
    overwrite_ents (bool): replace existing ``doc.ents`` instead of keeping them.
    ents_policy (str): how overlaps are resolved for ``doc.ents``: "score"
        (highest score first, then longer), "longest" (longer first, then
        higher score) or "first" (earlier start first, then longer).
    threshold (Optional[float]): spans scoring below this (the geometric-mean
        probability of the mention's reply tokens) are not written anywhere.
        None: the student's recorded choice (``threshold`` in the adapter's
        ``uniner_student.json``, chosen on the dev suite), else 0.
    multi_label (Optional[bool]): keep every type the student gives one span
        (true), or only its best-scoring type (false). None: the student's
        recorded choice (``multi_label`` in the adapter's ``uniner_student.json``,
        chosen on the dev suite for the default student), else true.
    max_passage_tokens (int): the most student tokens per window.
    window_overlap (int): student tokens shared by consecutive windows.
    dataset (Optional[str]): dataset name for the dataset-specific template.
    label_definitions (Dict[str, str]): per-label definitions to ask about
        instead of the bare label (the definition variant); with ``labels``
        configured, only for those labels.
    store_replies (bool): keep raw replies in ``doc.user_data["universal_ner"]``.
    bundle_weights (bool): ``nlp.to_disk`` copies the student's weights into the
        pipeline folder (adapter, and base unless built in), so the folder and a
        ``spacy package`` wheel made from it load anywhere; see
        :mod:`spacy_uniner.weights`.
    scorer (Optional[Callable]): the scoring method.

    Two ``universal_ner`` components of one pipeline cannot share a ``spans_key``:
    the second is refused here, naming the first (give it its own key).
    """
    for other_name, other in nlp.components:
        if isinstance(other, UniversalNER) and other.spans_key == spans_key:
            raise ValueError(
                f"The pipeline already has a universal_ner component, '{other_name}', writing "
                f"doc.spans[{spans_key!r}]; give '{name}' its own key: "
                f"nlp.add_pipe('universal_ner', name={name!r}, "
                f"config={{'spans_key': {name!r}, ...}})"
            )
    return UniversalNER(
        nlp.vocab,
        model,
        name=name,
        labels=labels,
        spans_key=spans_key,
        write_ents=write_ents,
        overwrite_ents=overwrite_ents,
        ents_policy=ents_policy,
        threshold=threshold,
        multi_label=multi_label,
        max_passage_tokens=max_passage_tokens,
        window_overlap=window_overlap,
        dataset=dataset,
        label_definitions=label_definitions,
        store_replies=store_replies,
        bundle_weights=bundle_weights,
        scorer=scorer,
    )


def best_label_per_span(
    scored: Dict[Tuple[int, int, str], float]
) -> Dict[Tuple[int, int, str], float]:
    """Of the types given to one (start, end), only the best-scoring one (ties: the
    first label in alphabetical order)."""
    best: Dict[Tuple[int, int], Tuple[int, int, str]] = {}
    for key in sorted(scored):
        here = best.get(key[:2])
        if here is None or scored[key] > scored[here]:
            best[key[:2]] = key
    return {key: scored[key] for key in best.values()}


@dataclass
class DocPrediction:
    """What the student said about one document."""

    spans: Dict[Tuple[int, int, str], float] = field(default_factory=dict)
    replies: List[Dict[str, Any]] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float, or a ValueError naming it (span scores are probabilities)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
        0.0 <= threshold <= 1.0
    ):
        raise ValueError(
            f"threshold must be a number between 0 and 1 (span scores are probabilities), "
            f"got {threshold!r}"
        )
    return float(threshold)


def normalize_labels(labels: Any) -> List[str]:
    """Validate labels: strings, whitespace collapsed, duplicates removed in order."""
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise TypeError(
            f"universal_ner labels must be a list of strings, got {type(labels).__name__}: "
            f"{labels!r}"
        )
    out: List[str] = []
    for label in labels:
        if not isinstance(label, str):
            raise TypeError(f"universal_ner label {label!r} is {type(label).__name__}, not str")
        clean = " ".join(label.split())
        if not clean:
            raise ValueError(f"universal_ner label {label!r} is empty")
        if clean != label:
            warnings.warn(f"universal_ner label {label!r} normalised to {clean!r}", stacklevel=3)
        if clean in out:
            warnings.warn(f"universal_ner label {clean!r} given twice; asked once", stacklevel=3)
            continue
        out.append(clean)
    return out


def normalize_definitions(definitions: Any, labels: Sequence[str]) -> Dict[str, str]:
    """Validate ``label_definitions``: label (normalised like the labels) → non-empty text.

    With ``labels`` configured, every defined label must be one of them (a definition
    for a label that is never asked is a mistake: a typo, or a label left out). Without
    configured labels (labels given per call) any label may be defined.
    """
    if not isinstance(definitions, dict):
        raise TypeError(
            f"universal_ner label_definitions must be a dict of label -> definition, "
            f"got {type(definitions).__name__}: {definitions!r}"
        )
    out: Dict[str, str] = {}
    for label, definition in definitions.items():
        if not isinstance(label, str) or not " ".join(label.split()):
            raise ValueError(f"universal_ner label_definitions: label {label!r} is not a label")
        if not isinstance(definition, str) or not definition.strip():
            raise ValueError(
                f"universal_ner label_definitions: the definition of {label!r} must be "
                f"non-empty text, got {definition!r}"
            )
        out[" ".join(label.split())] = definition
    not_asked = [label for label in out if labels and label not in labels]
    if not_asked:
        raise ValueError(
            f"universal_ner label_definitions define labels that are not asked: "
            f"{', '.join(map(repr, not_asked))} (labels: {', '.join(map(repr, labels))}). "
            f"Add them to labels, or remove their definitions."
        )
    return out


class UniversalNER(Pipe):
    def __init__(
        self,
        vocab: Any,
        model: Student,
        name: str = "universal_ner",
        *,
        labels: Sequence[str] = (),
        spans_key: str = "universal_ner",
        write_ents: bool = True,
        overwrite_ents: bool = False,
        ents_policy: str = "score",
        threshold: Optional[float] = None,
        multi_label: Optional[bool] = None,
        max_passage_tokens: int = 256,
        window_overlap: int = 32,
        dataset: Optional[str] = None,
        label_definitions: Optional[Dict[str, str]] = None,
        store_replies: bool = False,
        bundle_weights: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        if ents_policy not in ENTS_POLICIES:
            raise ValueError(f"ents_policy must be one of {ENTS_POLICIES}, got {ents_policy!r}")
        if not spans_key:
            raise ValueError("spans_key must be a non-empty string")
        make_windows("x", [(0, 1)], max_passage_tokens, window_overlap)  # validates both
        if threshold is not None:
            check_threshold(threshold)
        if bundle_weights and weights_owner(model) is None:
            raise ValueError(
                f"bundle_weights = true needs a student with local weights "
                f"(spacy_uniner.HFStudent.v2, or RayStudent.v2 over one), not {model!r}"
            )
        owner = weights_owner(model)
        if not bundle_weights and callable(getattr(owner, "check_source", None)):
            # Weights that cannot load are an error now, naming them (a pipeline that
            # bundles its weights finds them in its folder when it is loaded).
            owner.check_source()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.spans_key = spans_key
        self.write_ents = write_ents
        self.overwrite_ents = overwrite_ents
        self.ents_policy = ents_policy
        self.threshold = threshold
        if multi_label is not None and not isinstance(multi_label, bool):
            raise ValueError(f"multi_label must be true, false or null, got {multi_label!r}")
        self.multi_label = multi_label
        self.max_passage_tokens = max_passage_tokens
        self.window_overlap = window_overlap
        self.dataset = dataset
        self.store_replies = store_replies
        self.bundle_weights = bundle_weights
        self.scorer = scorer
        self.cfg: Dict[str, Any] = {"labels": normalize_labels(list(labels))}
        self.label_definitions = normalize_definitions(label_definitions or {}, self.labels)
        self.stats: Counter = Counter()

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    def add_label(self, label: str) -> int:
        new = normalize_labels(self.labels + (label,))
        added = len(new) - len(self.labels)
        self.cfg["labels"] = new
        return added

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, labels: Optional[Sequence[str]] = None) -> None:
        """Set labels (if given) and load the student's weights eagerly."""
        if labels is not None:
            self.cfg["labels"] = normalize_labels(list(labels))
        load = getattr(self.model, "load", None)
        if callable(load):
            load()

    def _labels_for_call(self, labels: Optional[Sequence[str]]) -> List[str]:
        chosen = normalize_labels(labels) if labels is not None else list(self.labels)
        if not chosen:
            raise ValueError(
                f"The '{self.name}' component has no labels. Give them in the config "
                f"(nlp.add_pipe('universal_ner', config={{'labels': ['person', ...]}})) or "
                f"per call (nlp.pipe(docs, component_cfg={{'{self.name}': "
                f"{{'labels': [...]}}}}))."
            )
        return chosen

    def __call__(self, doc: Doc, *, labels: Optional[Sequence[str]] = None) -> Doc:
        error_handler = self.get_error_handler()
        try:
            predictions = self.predict([doc], labels=labels)
            self.set_annotations([doc], predictions)
            return doc
        except Exception as e:
            error_handler(self.name, self, [doc], e)
            return doc

    def pipe(
        self,
        stream: Iterable[Doc],
        *,
        batch_size: int = 8,
        labels: Optional[Sequence[str]] = None,
    ) -> Iterator[Doc]:
        """Annotate documents in batches; all queries of a batch go to the student together.

        stream (Iterable[Doc]): the documents.
        batch_size (int): documents per batch, at least 1.
        labels (Optional[Sequence[str]]): labels for this call instead of the configured ones.
        YIELDS (Doc): the documents, in order. A batch that fails goes to the error handler.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"The '{self.name}' component needs batch_size >= 1 (documents per batch), "
                f"got {batch_size!r}: nlp.pipe(texts, batch_size=...)"
            )
        chosen = self._labels_for_call(labels)
        return self._pipe(stream, batch_size, chosen)

    def _pipe(self, stream: Iterable[Doc], batch_size: int, chosen: List[str]) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        if callable(getattr(self.model, "submit", None)):
            yield from self._pipe_submitted(stream, batch_size, chosen, error_handler)
            return
        for docs in util.minibatch(stream, size=batch_size):
            try:
                predictions = self.predict(docs, labels=chosen)
                self.set_annotations(docs, predictions)
                yield from docs
            except Exception as e:
                error_handler(self.name, self, docs, e)

    def _pipe_submitted(
        self, stream: Iterable[Doc], batch_size: int, labels: List[str], error_handler: Callable
    ) -> Iterator[Doc]:
        """``pipe`` for a student that can ``submit`` (e.g. RayStudent): up to
        ``model.lookahead`` batches wait on the student while the oldest is
        collected, so the student stays busy and documents keep their order."""
        lookahead = max(0, int(getattr(self.model, "lookahead", 1)))
        pending: Deque[Tuple[List[Doc], Any, Any]] = deque()

        def finish(docs: List[Doc], queries: Any, handle: Any) -> Iterator[Doc]:
            try:
                if isinstance(handle, Exception):
                    raise handle
                generations = handle.result() if handle is not None else []
                self.set_annotations(docs, self._read_generations(docs, *queries, generations))
                yield from docs
            except Exception as e:
                error_handler(self.name, self, docs, e)

        try:
            for docs in util.minibatch(stream, size=batch_size):
                try:
                    queries = self._make_queries(docs, labels)
                    handle = self.model.submit(queries[1]) if queries[1] else None
                except Exception as e:  # reported in order, when this batch's turn comes
                    queries, handle = None, e
                pending.append((docs, queries, handle))
                while len(pending) > lookahead:
                    yield from finish(*pending.popleft())
            while pending:
                yield from finish(*pending.popleft())
        finally:  # the caller stopped early: drop what is still queued
            for _, _, handle in pending:
                if hasattr(handle, "cancel"):
                    handle.cancel()

    def _question_label(self, label: str) -> str:
        return self.label_definitions.get(label, label)

    def predict(
        self, docs: Iterable[Doc], *, labels: Optional[Sequence[str]] = None
    ) -> List[DocPrediction]:
        """Ask the student about every (window, label) of every document."""
        docs = list(docs)
        queries, prompt_texts, results = self._make_queries(docs, self._labels_for_call(labels))
        generations = self.model.generate(prompt_texts) if prompt_texts else []
        return self._read_generations(docs, queries, prompt_texts, results, generations)

    def _make_queries(
        self, docs: List[Doc], chosen: Sequence[str]
    ) -> Tuple[List[Tuple[int, int, int, str]], List[str], List[DocPrediction]]:
        """RETURNS the (doc index, window start, end, label) of every query, its prompt,
        and an empty prediction per document."""
        queries: List[Tuple[int, int, int, str]] = []
        prompt_texts: List[str] = []
        results = [DocPrediction() for _ in docs]
        for i, doc in enumerate(docs):
            text = doc.text
            if not text.strip():
                continue
            windows = make_windows(
                text, self.model.token_offsets(text), self.max_passage_tokens, self.window_overlap
            )
            results[i].stats["windows"] += len(windows)
            for w in windows:
                passage = text[w.start : w.end]
                for label in chosen:
                    queries.append((i, w.start, w.end, label))
                    prompt_texts.append(
                        prompts.render_query(passage, self._question_label(label), self.dataset)
                    )
        return queries, prompt_texts, results

    def _read_generations(
        self,
        docs: List[Doc],
        queries: List[Tuple[int, int, int, str]],
        prompt_texts: List[str],
        results: List[DocPrediction],
        generations: List[Generation],
    ) -> List[DocPrediction]:
        if len(generations) != len(prompt_texts):
            raise RuntimeError(
                f"The student returned {len(generations)} replies for {len(prompt_texts)} prompts"
            )
        texts = [doc.text for doc in docs]  # Doc.text joins its tokens on every call
        for (i, start, end, label), gen in zip(queries, generations):
            self._read_reply(texts[i], start, end, label, gen, results[i])
        for result in results:
            self.stats.update(result.stats)
        return results

    def _read_reply(
        self, text: str, start: int, end: int, label: str, gen: Generation, out: DocPrediction
    ) -> None:
        parsed = parse_student_reply(gen.text)
        out.stats["queries"] += 1
        if not parsed.ok:
            out.stats["parse_failures"] += 1
            logger.info("Unparseable reply for %r (%s): %.200r", label, parsed.error, gen.text)
        out.stats["dropped_items"] += parsed.dropped
        passage = text[start:end]
        for mention in parsed.items:
            found = find_mentions(passage, mention)
            if not found:
                out.stats["mentions_not_found"] += 1
                continue
            out.stats["mentions"] += 1
            at = gen.text.find(mention)
            score = gen.confidence(at, at + len(mention)) if at >= 0 else gen.confidence(0, 0)
            for s, e in found:
                key = (start + s, start + e, label)
                out.spans[key] = max(score, out.spans.get(key, 0.0))
        if self.store_replies:
            out.replies.append(
                {
                    "label": label,
                    "window": [start, end],
                    "reply": gen.text,
                    "mentions": list(parsed.items),
                    "error": parsed.error,
                }
            )

    def set_annotations(self, docs: Iterable[Doc], predictions: List[DocPrediction]) -> None:
        for doc, pred in zip(docs, predictions):
            best: Dict[Tuple[int, int, str], float] = {}
            threshold = self.score_threshold
            for (s, e, label), score in pred.spans.items():
                if score < threshold:
                    continue
                span = doc.char_span(s, e, label=label, alignment_mode="expand")
                if span is None:
                    pred.stats["unaligned"] += 1
                    continue
                key = (span.start, span.end, label)
                best[key] = max(score, best.get(key, 0.0))
            if not self.keeps_every_label:
                best = best_label_per_span(best)
            keys = sorted(best)
            self._add_to_group(doc, keys, best)
            if self.write_ents:
                self._write_ents(doc, [(k, best[k]) for k in keys])
            if self.store_replies:
                doc.user_data[self.name] = {"replies": pred.replies, "stats": dict(pred.stats)}

    @property
    def student_settings(self) -> Dict[str, Any]:
        """What the student records beside its weights (``uniner_student.json``), if any."""
        return getattr(self.model, "settings", None) or {}

    @property
    def score_threshold(self) -> float:
        """The lowest span score written (``threshold``, else the student's recorded
        choice, else 0)."""
        if self.threshold is not None:
            return self.threshold
        return float(self.student_settings.get("threshold", 0.0))

    @property
    def keeps_every_label(self) -> bool:
        """Whether a span keeps every type the student gave it (``multi_label``,
        else the student's recorded choice, else true)."""
        if self.multi_label is not None:
            return self.multi_label
        return bool(self.student_settings.get("multi_label", True))

    def _add_to_group(
        self, doc: Doc, keys: List[Tuple[int, int, str]], best: Dict[Tuple[int, int, str], float]
    ) -> None:
        """Write the spans to ``doc.spans[spans_key]``. A group already there (from an
        incoming Doc, or an earlier call with other labels) is extended: its spans stay,
        in their order, new ones follow, and a span already there keeps the higher score.
        A group whose ``attrs["scores"]`` does not match its spans was not made by this
        component and is an error rather than something to mix scores into."""
        if self.spans_key not in doc.spans or not len(doc.spans[self.spans_key]):
            doc.spans[self.spans_key] = SpanGroup(
                doc,
                name=self.spans_key,
                spans=[Span(doc, s, e, label=label) for s, e, label in keys],
                attrs={"scores": [best[k] for k in keys]},
            )
            return
        group = doc.spans[self.spans_key]
        scores = group.attrs.get("scores")
        if scores is None or len(scores) != len(group):
            raise ValueError(
                f"doc.spans[{self.spans_key!r}] already holds {len(group)} spans without "
                f"one score each in attrs['scores'] (they were not written by universal_ner); "
                f"give the '{self.name}' component its own spans_key"
            )
        scores = [float(x) for x in scores]
        where = {(span.start, span.end, span.label_): i for i, span in enumerate(group)}
        for key in keys:
            if key in where:
                scores[where[key]] = max(scores[where[key]], best[key])
            else:
                group.append(Span(doc, key[0], key[1], label=key[2]))
                scores.append(best[key])
        group.attrs["scores"] = scores

    def _write_ents(self, doc: Doc, scored: List[Tuple[Tuple[int, int, str], float]]) -> None:
        if self.ents_policy == "score":
            order = sorted(scored, key=lambda x: (-x[1], x[0][0] - x[0][1], x[0][0], x[0][2]))
        elif self.ents_policy == "longest":
            order = sorted(scored, key=lambda x: (x[0][0] - x[0][1], -x[1], x[0][0], x[0][2]))
        else:
            order = sorted(scored, key=lambda x: (x[0][0], x[0][0] - x[0][1], -x[1], x[0][2]))
        kept = [] if self.overwrite_ents else list(doc.ents)
        taken = set()
        for ent in kept:
            taken.update(range(ent.start, ent.end))
        for (s, e, label), _ in order:
            if taken.isdisjoint(range(s, e)):
                kept.append(Span(doc, s, e, label=label))
                taken.update(range(s, e))
        doc.ents = sorted(kept, key=lambda span: span.start)

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        if self.scorer is None:
            return {}
        return self.scorer(examples, spans_key=self.spans_key, **kwargs)

    # Serialization: the model config names the weights; with bundle_weights they
    # are also copied to ``weights/``, which wins on loading (spacy_uniner/weights.py).
    def to_disk(self, path: Any, *, exclude: Iterable[str] = tuple()) -> None:
        serialize: Dict[str, Callable[[Path], Any]] = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
        }
        if hasattr(self.model, "to_disk"):
            serialize["model"] = lambda p: self.model.to_disk(p)  # type: ignore[attr-defined]
        if self.bundle_weights:
            serialize["weights"] = lambda p: write_bundle(weights_owner(self.model), p)
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path: Any, *, exclude: Iterable[str] = tuple()) -> "UniversalNER":
        def load_cfg(p: Path) -> None:
            self.cfg.update(srsly.read_json(p))

        readers: Dict[str, Callable[[Path], Any]] = {"cfg": load_cfg}
        owner = weights_owner(self.model)
        if owner is not None:
            readers["weights"] = lambda p: read_bundle(owner, p)
        util.from_disk(path, readers, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return util.to_bytes({"cfg": lambda: srsly.json_dumps(self.cfg)}, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "UniversalNER":
        util.from_bytes(bytes_data, {"cfg": lambda b: self.cfg.update(srsly.json_loads(b))}, exclude)
        return self

