"""NER metrics beyond spaCy's strict span F: partial match, UniNER's string metric, and
where the strict errors come from (:func:`error_kinds`).

**Partial match** (UniversalNER paper, Tab. 5; Segura-Bedmar et al., 2013): a
prediction identical to a gold span (type and boundaries) is one true
positive; a prediction of the *same type* that only overlaps a gold span is
half a true positive. Matching is one-to-one: exact pairs are taken first,
then a maximum matching between the remaining same-type overlapping spans.
Taking exact pairs first is optimal: undoing an exact pair loses 1 and can
win at most two half-pairs.

**UniNER string metric** (``src/eval/evaluate.py`` of universal-ner/universal-ner,
the script behind the paper's numbers): per query (passage × type) the reply
and the gold answer are read as JSON lists, every item is normalised (lower
case, punctuation removed, the words a/an/the removed, whitespace collapsed),
duplicates are dropped, and a predicted item is correct if it is among the
gold items. Counts are summed over all queries (micro). The reference reads a
list only if the reply *starts* with ``[`` and stops at the first ``]``; any
other reply, invalid JSON, or a non-string item makes the whole answer empty.
:func:`uniner_parse` keeps those rules on purpose, so numbers are comparable
with the paper's. It is stricter than the component's own parser
(:func:`spacy_uniner.parsing.parse_student_reply`), which repairs prose around
a list and counts what it cannot read.
"""

import json
import re
import string
from dataclasses import dataclass, fields
from typing import Any, Dict, Hashable, Iterable, List, Sequence, Set, Tuple

Span = Tuple[int, int, Hashable]  # start, end (exclusive), label

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FIRST_LIST = re.compile(r"\[(.*?)\]")


class _Counts:
    """Dataclass counts that add up field by field: ``total += counts``."""

    def __iadd__(self, other):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class PRF(_Counts):
    """Micro counts and their precision, recall and F1 (0.0 where undefined)."""

    tp: float = 0.0
    n_pred: int = 0
    n_gold: int = 0

    @property
    def p(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def r(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f(self) -> float:
        p, r = self.p, self.r
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> Dict[str, float]:
        return {"p": self.p, "r": self.r, "f": self.f, "tp": self.tp,
                "n_pred": self.n_pred, "n_gold": self.n_gold}


# --- partial match -----------------------------------------------------------------


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _max_matching(left: List[Span], right: List[Span]) -> int:
    """Size of a maximum one-to-one matching between overlapping spans (Kuhn)."""
    adj = [[j for j, b in enumerate(right) if _overlaps(a, b)] for a in left]
    owner: List[int] = [-1] * len(right)

    def augment(i: int, seen: List[bool]) -> bool:
        for j in adj[i]:
            if not seen[j]:
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, [False] * len(right)) for i in range(len(left)))


@dataclass
class PartialCounts(_Counts):
    exact: int = 0
    partial: int = 0
    n_pred: int = 0
    n_gold: int = 0

    def prf(self) -> PRF:
        return PRF(self.exact + 0.5 * self.partial, self.n_pred, self.n_gold)


def partial_match_counts(
    pred: Iterable[Span], gold: Iterable[Span]
) -> Dict[Hashable, PartialCounts]:
    """Exact and partial (same-type overlap) matches per label for one document.

    pred, gold: ``(start, end, label)`` spans over the same tokens (or
        characters); duplicates count once.
    RETURNS (Dict[label, PartialCounts]): counts for every label seen.
    """
    pred_set, gold_set = set(pred), set(gold)
    for s, e, _ in pred_set | gold_set:
        if e <= s:
            raise ValueError(f"Empty or reversed span ({s}, {e}) in partial matching")
    labels = {label for _, _, label in pred_set | gold_set}
    out: Dict[Hashable, PartialCounts] = {}
    for label in labels:
        p = {sp for sp in pred_set if sp[2] == label}
        g = {sp for sp in gold_set if sp[2] == label}
        exact = p & g
        rest_p, rest_g = sorted(p - exact), sorted(g - exact)  # sorted: deterministic
        out[label] = PartialCounts(
            exact=len(exact),
            partial=_max_matching(rest_p, rest_g),
            n_pred=len(p),
            n_gold=len(g),
        )
    return out


def partial_match_prf(pred: Iterable[Span], gold: Iterable[Span]) -> PRF:
    """Micro partial-match counts for one document (see :func:`partial_match_counts`)."""
    total = PartialCounts()
    for counts in partial_match_counts(pred, gold).values():
        total += counts
    return total.prf()


# --- error kinds --------------------------------------------------------------------

# Most telling first: a span is counted under the first kind that fits it.
ERROR_KINDS = ("exact", "wrong_type", "boundary", "boundary_and_type", "none")


def _kind(span: Span, others: Set[Span]) -> str:
    if span in others:
        return "exact"
    near = [o for o in others if _overlaps(span, o)]
    if any(o[:2] == span[:2] for o in near):
        return "wrong_type"
    if any(o[2] == span[2] for o in near):
        return "boundary"
    return "boundary_and_type" if near else "none"


def error_kinds(pred: Iterable[Span], gold: Iterable[Span]) -> Dict[str, Dict[str, int]]:
    """Where strict errors come from, for one document: each predicted span by what
    it meets in the gold, and each gold span by what it meets in the predictions.

    Kinds (:data:`ERROR_KINDS`, the first that fits): ``exact`` (same offsets and
    type), ``wrong_type`` (same offsets, another type), ``boundary`` (overlaps a span
    of its type), ``boundary_and_type`` (overlaps only spans of other types),
    ``none`` (overlaps nothing: a spurious prediction, a missed gold span).
    RETURNS: {"predicted": {kind: count}, "gold": {kind: count}}, every kind present.
    """
    pred_set, gold_set = set(pred), set(gold)
    out = {side: dict.fromkeys(ERROR_KINDS, 0) for side in ("predicted", "gold")}
    for side, spans, others in (("predicted", pred_set, gold_set), ("gold", gold_set, pred_set)):
        for span in spans:
            out[side][_kind(span, others)] += 1
    return out


# --- UniNER string metric ------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop a/an/the, collapse whitespace (UniNER/SQuAD)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def reference_response(reply: str) -> str:
    """What the reference pipeline keeps of a generation: the text after the
    last ``ASSISTANT:``, stripped (``get_response`` in UniNER's ``src/utils.py``)."""
    return reply.split("ASSISTANT:")[-1].strip()


def uniner_parse(answer: str) -> List[Any]:
    """A reply or gold answer as the reference evaluator reads it.

    The text must start with ``[``; the list ends at the first ``]``; it is
    parsed as JSON; string items are normalised, list items become tuples of
    normalised strings; duplicates are removed in order. Anything else (prose
    first, invalid JSON, a non-string item) yields ``[]``.
    """
    match = _FIRST_LIST.match(answer)
    candidate = match.group() if match else "[]"
    try:
        items = json.loads(candidate)
        out: List[Any] = []
        for item in items:
            if isinstance(item, (list, tuple)):
                norm: Any = tuple(normalize_answer(x) for x in item)
            else:
                norm = normalize_answer(item)
            if norm not in out:
                out.append(norm)
        return out
    except Exception:  # the reference returns [] on any failure; so do we
        return []


def string_match_counts(pred: Sequence[Any], gold: Sequence[Any]) -> PRF:
    """Counts for one query from already parsed (normalised, de-duplicated) items."""
    return PRF(sum(1 for t in pred if t in gold), len(pred), len(gold))


def normalized_mentions(mentions: Iterable[str]) -> List[str]:
    """Normalise and de-duplicate mention strings in order (as :func:`uniner_parse` does)."""
    out: List[str] = []
    for mention in mentions:
        norm = normalize_answer(mention)
        if norm not in out:
            out.append(norm)
    return out


def uniner_string_counts(replies: Sequence[str], golds: Sequence[str]) -> PRF:
    """Micro counts of the UniNER string metric over aligned (reply, gold) queries."""
    if len(replies) != len(golds):
        raise ValueError(f"{len(replies)} replies for {len(golds)} gold answers")
    total = PRF()
    for reply, gold in zip(replies, golds):
        total += string_match_counts(
            uniner_parse(reference_response(reply)), uniner_parse(gold)
        )
    return total


def reference_prf(counts: PRF) -> Dict[str, float]:
    """Precision, recall and F1 exactly as the reference computes them (1e-10 smoothing)."""
    prec = counts.tp / (counts.n_pred + 1e-10)
    recall = counts.tp / (counts.n_gold + 1e-10)
    f1 = 2 * prec * recall / (prec + recall + 1e-10)
    return {"precision": prec, "recall": recall, "f1": f1}
