"""Scores for the component: ``spacy_uniner.scorer.v1`` (strict) and ``.v2`` (all three).

``v2`` returns, for the span group ``spans_key`` (default ``universal_ner``):

* strict span micro P/R/F and per type (``spans_{key}_p/r/f/per_type``, from
  spaCy's :meth:`Scorer.score_spans`, overlaps allowed) — the same keys as v1;
* partial match (``spans_{key}_partial_p/r/f/per_type``): a same-type
  prediction that overlaps a gold span counts 0.5 TP, one-to-one
  (:mod:`.metrics`);
* UniNER's string metric (``spans_{key}_uniner_p/r/f``), micro over (doc,
  type) queries. Predicted strings come from the raw replies the component
  stored (``store_replies = true``: ``doc.user_data[replies_key]``), read
  exactly as UniNER's reference script reads them; without stored replies the
  texts of the predicted spans are used instead, which ignores mentions the
  model gave that are not in the text. Gold strings come from
  ``reference.user_data["uniner_gold"][type]`` (the raw gold answer, set by
  :mod:`.benchmarks`) or else from the texts of the gold spans.
  ``spans_{key}_uniner_from_replies`` says what share of documents had replies.

Each P/R/F is None when there was nothing to score (no gold and no predicted
span or string), as spaCy does.
"""

from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, List

from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from .metrics import (
    PRF,
    PartialCounts,
    normalized_mentions,
    partial_match_counts,
    reference_response,
    string_match_counts,
    uniner_parse,
)

GOLD_KEY = "uniner_gold"


def score_spans_strict(
    examples: Iterable[Example], spans_key: str = "universal_ner", **kwargs: Any
) -> Dict[str, Any]:
    """Strict span micro P/R/F (type and boundaries) on ``doc.spans[spans_key]``.

    Keys follow spaCy's ``spans_{key}_p/r/f`` and ``spans_{key}_per_type``.
    """
    return Scorer.score_spans(
        examples,
        attr=f"spans_{spans_key}",
        getter=lambda doc, attr: doc.spans.get(spans_key, []),
        has_annotation=lambda doc: spans_key in doc.spans,
        allow_overlap=True,
        **kwargs,
    )


def _prf_keys(prefix: str, prf: PRF) -> Dict[str, Any]:
    """P/R/F keys; None when there was nothing to score (spaCy's convention)."""
    if not prf.n_pred and not prf.n_gold:
        return {f"{prefix}_p": None, f"{prefix}_r": None, f"{prefix}_f": None}
    return {f"{prefix}_p": prf.p, f"{prefix}_r": prf.r, f"{prefix}_f": prf.f}


def _aligned_pred_spans(example: Example, spans_key: str) -> List[tuple]:
    """Predicted spans mapped onto the reference tokens, as (start, end, label)."""
    pred = example.predicted.spans.get(spans_key)
    if pred is None:
        return []
    aligned = example.get_aligned_spans_x2y(list(pred), allow_overlap=True)
    return [(s.start, s.end, s.label_) for s in aligned]


def score_spans_partial(
    examples: Iterable[Example], spans_key: str = "universal_ner"
) -> Dict[str, Any]:
    """Partial-match micro P/R/F and per type on ``doc.spans[spans_key]``."""
    per_label: Dict[str, PartialCounts] = defaultdict(PartialCounts)
    for eg in examples:
        if spans_key not in eg.reference.spans:
            continue
        gold = [(s.start, s.end, s.label_) for s in eg.reference.spans[spans_key]]
        for label, counts in partial_match_counts(_aligned_pred_spans(eg, spans_key), gold).items():
            per_label[label] += counts
    total = PartialCounts()
    for counts in per_label.values():
        total += counts
    prefix = f"spans_{spans_key}_partial"
    prf = total.prf()
    return {
        **_prf_keys(prefix, prf),
        f"{prefix}_per_type": {
            label: {"p": c.prf().p, "r": c.prf().r, "f": c.prf().f}
            for label, c in sorted(per_label.items())
        },
    }


def _predicted_strings(doc: Doc, spans_key: str, replies_key: str) -> tuple:
    """(per-label normalised predicted strings, whether they came from replies)."""
    data = doc.user_data.get(replies_key)
    by_label: Dict[str, List[Any]] = defaultdict(list)
    if isinstance(data, dict) and isinstance(data.get("replies"), list):
        for rep in data["replies"]:
            items = by_label[rep["label"]]
            for item in uniner_parse(reference_response(rep["reply"])):
                if item not in items:
                    items.append(item)
        return by_label, True
    for span in doc.spans.get(spans_key, []):
        by_label[span.label_].append(span.text)
    return {k: normalized_mentions(v) for k, v in by_label.items()}, False


def _gold_strings(doc: Doc, spans_key: str) -> Dict[str, List[Any]]:
    raw = doc.user_data.get(GOLD_KEY)
    if isinstance(raw, dict):
        return {label: uniner_parse(answer) for label, answer in raw.items()}
    by_label: Dict[str, List[str]] = defaultdict(list)
    for span in doc.spans.get(spans_key, []):
        by_label[span.label_].append(span.text)
    return {k: normalized_mentions(v) for k, v in by_label.items()}


def score_uniner_strings(
    examples: Iterable[Example],
    spans_key: str = "universal_ner",
    replies_key: str = "universal_ner",
) -> Dict[str, Any]:
    """UniNER's string metric, micro over (document, type) queries."""
    total = PRF()
    per_label: Dict[str, PRF] = defaultdict(PRF)
    n_docs = from_replies = 0
    for eg in examples:
        n_docs += 1
        pred, used_replies = _predicted_strings(eg.predicted, spans_key, replies_key)
        from_replies += used_replies
        gold = _gold_strings(eg.reference, spans_key)
        for label in set(pred) | set(gold):
            counts = string_match_counts(pred.get(label, []), gold.get(label, []))
            total += counts
            per_label[label] += counts
    prefix = f"spans_{spans_key}_uniner"
    return {
        **_prf_keys(prefix, total),
        f"{prefix}_per_type": {
            label: {"p": c.p, "r": c.r, "f": c.f, "n_pred": c.n_pred, "n_gold": c.n_gold}
            for label, c in sorted(per_label.items())
            if c.n_pred or c.n_gold
        },
        f"{prefix}_from_replies": from_replies / n_docs if n_docs else 0.0,
    }


def score_all(
    examples: Iterable[Example],
    spans_key: str = "universal_ner",
    replies_key: str = "universal_ner",
    **kwargs: Any,
) -> Dict[str, Any]:
    """Strict, partial and UniNER-string scores (see the module docstring)."""
    examples = list(examples)
    scores = score_spans_strict(examples, spans_key=spans_key, **kwargs)
    scores.update(score_spans_partial(examples, spans_key=spans_key))
    scores.update(score_uniner_strings(examples, spans_key=spans_key, replies_key=replies_key))
    return scores


@registry.scorers("spacy_uniner.scorer.v1")
def make_uniner_scorer():
    return score_spans_strict


@registry.scorers("spacy_uniner.scorer.v2")
def make_uniner_scorer_v2(replies_key: str = "universal_ner") -> Callable[..., Dict[str, Any]]:
    """Strict + partial + UniNER-string scores.

    replies_key (str): the ``doc.user_data`` key under which the component
        stored its raw replies (its pipe name; needs ``store_replies = true``).
    """

    def scorer(examples: Iterable[Example], spans_key: str = "universal_ner", **kwargs: Any):
        return score_all(examples, spans_key=spans_key, replies_key=replies_key, **kwargs)

    return scorer


__all__ = [
    "GOLD_KEY",
    "make_uniner_scorer",
    "make_uniner_scorer_v2",
    "score_all",
    "score_spans_partial",
    "score_spans_strict",
    "score_uniner_strings",
]
