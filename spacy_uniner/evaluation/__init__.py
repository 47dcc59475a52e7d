"""Evaluation: benchmark files, the suites, running a pipeline over them, the scores.

* :mod:`.benchmarks`: benchmark files (UniNER JSON, BIO, the Pile-NER dev split)
  → passages with gold spans → spaCy Examples; the zero-shot and dev suites.
* :mod:`.label_maps`: raw dataset tags → natural-language entity types.
* :mod:`.runner`: a pipeline over a benchmark, resumable; averages and the
  table beside the paper's rows.
* :mod:`.metrics` and :mod:`.scoring`: strict, partial-match and UniNER's
  string F1; the component's registered scorers (``spacy_uniner.scorer.v1``,
  ``v2``).
* :mod:`.calibration`: choosing ``empty_bias`` from one student run.

The command lines are ``python -m eval.benchmark`` and ``python -m eval.calibrate``.
"""
