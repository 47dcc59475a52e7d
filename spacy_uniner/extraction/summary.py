"""``summary.json``: what an extraction's output folder holds, and what this run did."""

import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .predictor import error_message
from .store import SUMMARY_FILE, atomic_write_json


def write_summary(
    out: Path,
    options: Any,
    totals: Mapping[str, int],
    run: Mapping[str, Any],
    *,
    error: Optional[BaseException],
    started: float,
    extract_started: Optional[float],
) -> Dict[str, Any]:
    """Write ``out/summary.json``; RETURNS its content.

    options (ExtractOptions): the run's options.
    totals: the folder's counts (:func:`.store.write_outputs`).
    run: this run's counts (run_id, ok, errors, entities, the input's counts …).
    error: what stopped the run, if it did not finish.
    started, extract_started: ``time.perf_counter()`` at the start of the run and of
        the extraction phase (None: nothing was extracted).
    """
    spec = options.spec()
    processed = run["ok"] + run["errors"]
    extracting = time.perf_counter() - extract_started if extract_started is not None else 0.0
    summary = {
        "input": str(options.input),
        "output": str(out),
        "labels": list(options.labels),
        "model": None if spec.pipeline else spec.model,
        "pipeline": spec.pipeline,
        **totals,
        "run": {
            "run_id": run["run_id"],
            "finished": error is None,
            "error": None if error is None else error_message(error),
            "input_documents": run["input_documents"],
            "input_fingerprint": run["input_fingerprint"],
            "processed": processed,
            "ok": run["ok"],
            "errors": run["errors"],
            "entities": run["entities"],
            "duplicate_ids": run["duplicate_ids"],
            "repeated_texts": run["repeated_texts"],
            "already_done": run["already_done"],
            "retry_errors": options.retry_errors,
            "appended": run["appended"],
            "seconds": round(time.perf_counter() - started, 2),
            "extract_seconds": round(extracting, 2),
            # Over the extraction phase: actor start-up included; Ray start-up and reading not.
            "docs_per_second": round(processed / extracting, 2) if extracting else 0.0,
            "actors": options.actors,
            "num_gpus": options.num_gpus,
            "batch_size": options.batch_size,
        },
    }
    atomic_write_json(summary, out / SUMMARY_FILE)
    return summary


def format_summary(summary: Dict[str, Any]) -> str:
    """A plain-text summary of ``summary.json`` for the terminal."""
    run = summary["run"]
    return "\n".join(
        [
            f"Extraction → {summary['output']} ({summary['pipeline'] or summary['model']}; "
            f"labels: {', '.join(summary['labels'])})",
            f"documents: {summary['documents']} ({summary['ok']} ok, {summary['errors']} errors), "
            f"entities: {summary['entities']}",
            f"this run: {run['processed']} docs ({run['ok']} ok, {run['errors']} errors), "
            f"{run['entities']} entities, {run['already_done']} already done; "
            f"{run['extract_seconds']:.1f} s extracting, {run['docs_per_second']:.2f} docs/s "
            f"with {run['actors']} actors ({run['seconds']:.1f} s in all)",
        ]
    )
