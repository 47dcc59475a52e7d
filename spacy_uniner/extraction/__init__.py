"""Run a ``universal_ner`` pipeline over a corpus on Ray Data, resumably and exactly once.

Documents (JSONL, parquet, ``datasets`` folders, or a folder of text files, one
document per file; :mod:`spacy_uniner.documents`) are read in the driver, in
input order, and given a stable id. The whole input is checked first
(:func:`check_input`): rows that repeat an id are refused, naming the first few
(or, with ``dedupe="first"``, the first row of each id is kept), and the
input's fingerprint (its ids and texts) is compared with the one recorded in
the output folder. Nothing is written before these checks pass. Those not done
yet wait in Ray's object store and go in batches to a pool of actors
(:class:`ExtractPredictor`, ``compute=ActorPoolStrategy``, ``num_gpus`` per
actor); each actor loads the pipeline once (and answers full-width warm-up
texts, :func:`warm_up_texts`) and returns plain columns for its batch. Batches
are ``batch_size`` documents, the last one per actor cut in two so that the
actors finish together. An actor that dies is replaced and its batch run again
(at most ``actor_retries`` times, then the run stops; what was written stays).

Exactly once: every batch comes back as one table that holds, per document,
its status (``ok`` or ``error`` with the message) *and* its entities, and the
driver writes it as one parquet file under ``OUTPUT/parts/`` (written to a
temporary name, then renamed). A run killed at any point therefore leaves
only whole batches behind; a rerun reads the ids in ``parts/`` and processes
only the documents that are not there. The outputs are derived from
``parts/`` at the end of every run, also one that failed:

* ``entities.parquet`` — doc_id, label, start_char, end_char, text, score;
* ``status.parquet`` — doc_id, status, error, entities, run_id: one row per input id;
* ``summary.json`` — totals and this run's counts and speed;
* ``extract.json`` — the labels and model the results were made with, and the
  fingerprint of the input(s) they are for; a rerun with other settings is
  refused, and one with another input unless ``append``, rather than mixing
  results.

A document that fails (bad input, the model raising) is recorded with its
error, never dropped: a JSONL line that is not UTF-8 or not a JSON object is a
document of its own (id ``<bad line>:FILE line N``) whose error names the file
and line. A rerun keeps those records unless ``retry_errors``; then the
documents are processed again and the new record supersedes the old one
(``status.parquet`` still has one row per id).

Modules, by job: :mod:`.inputs` (reading and checking the input, blocks),
:mod:`.predictor` (the actors), :mod:`.store` (parts, outputs, the manifest),
:mod:`.summary` and :mod:`.job` (the Ray pipeline, :func:`extract`). The entry
point is ``python -m ray_jobs.extract``.
"""

from ..documents import InputRow, read_input
from .inputs import InputCheck, check_input, document_blocks, halves
from .job import DEDUPE_POLICIES, ExtractOptions, extract
from .predictor import ExtractPredictor, PipelineSpec, find_component, warm_up_texts
from .store import read_parts, write_outputs
from .summary import format_summary

__all__ = [
    "DEDUPE_POLICIES",
    "ExtractOptions",
    "ExtractPredictor",
    "InputCheck",
    "InputRow",
    "PipelineSpec",
    "check_input",
    "document_blocks",
    "extract",
    "find_component",
    "format_summary",
    "halves",
    "read_input",
    "read_parts",
    "warm_up_texts",
    "write_outputs",
]
