"""Thin typer entry points over :mod:`spacy_uniner` that run on Ray."""
