"""Scores for the component, registered as ``spacy_uniner.scorer.v1``."""

from typing import Any, Dict, Iterable

from spacy.scorer import Scorer
from spacy.training import Example
from spacy.util import registry


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


@registry.scorers("spacy_uniner.scorer.v1")
def make_uniner_scorer():
    return score_spans_strict
