"""Thin command-line entry points for evaluation (logic lives in ``spacy_uniner``)."""
