"""Running a pipeline over a benchmark, resumably, and reporting the numbers.

:func:`run_benchmark` asks a pipeline with the ``universal_ner`` component
about every passage of a :class:`~.benchmarks.Benchmark` (optionally a seeded
sample), caches each passage's replies as one JSON line
(:class:`PredictionCache`) so that an interrupted run continues where it
stopped, then scores strict / partial / UniNER-string F1 with
:func:`.scoring.score_all`. :func:`averages` and :func:`markdown_table` report
a suite beside the paper's rows.
"""

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, SpanGroup
from spacy.training import Example

from .benchmarks import DOMAINS, PAPER_ZERO_SHOT, ZERO_SHOT, Benchmark, GoldPassage
from .metrics import ERROR_KINDS, error_kinds, reference_prf, uniner_string_counts
from .scoring import score_all

logger = logging.getLogger("spacy_uniner")


# --- running -------------------------------------------------------------------------


def _fingerprint(model_config: Dict[str, Any], bench: Benchmark, component_config: Dict) -> str:
    # Per-passage labels come with the passage (its id fixes them); their union
    # depends on the sample, which a cache may grow across runs.
    per_passage = any(p.labels is not None for p in bench.passages)
    payload = json.dumps(
        {"model": model_config, "component": component_config, "dataset": bench.name,
         "labels": "per passage" if per_passage else bench.labels, "source": bench.source},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode("utf8")).hexdigest()[:16]


class CacheMismatch(ValueError):
    """A cache file written for another model, configuration or dataset."""


class PredictionCache:
    """One JSON line per finished passage (or per record keyed by ``key``); a torn
    last line is ignored and rewritten."""

    def __init__(self, path: Path, fingerprint: str, overwrite: bool = False,
                 key: str = "passage_id",
                 remedy: str = "use another --output folder or --overwrite") -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.key = key
        self.remedy = remedy
        self.records: Dict[str, Dict[str, Any]] = {}
        self.torn = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and path.exists():
            path.unlink()
        if path.exists():
            self._read()
        else:
            self._write_all()

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("fingerprint") != self.fingerprint:
            raise CacheMismatch(
                f"{self.path} was written for a different model, configuration or dataset "
                f"(fingerprint {header.get('fingerprint')} != {self.fingerprint}); {self.remedy}"
            )
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                self.records[rec[self.key]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                self.torn += 1
        if self.torn:
            logger.warning("%s: %d unreadable line(s) ignored; what they held is made again",
                           self.path, self.torn)
            self._write_all()

    def _write_all(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf8") as fh:
            fh.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
            for rec in self.records.values():
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tmp.replace(self.path)

    def add(self, records: Iterable[Dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf8") as fh:
            for rec in records:
                self.records[rec[self.key]] = rec
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()


def _record(passage: GoldPassage, doc: Doc, spans_key: str, pipe_name: str) -> Dict[str, Any]:
    data = doc.user_data.get(pipe_name) or {}
    group = doc.spans.get(spans_key, [])
    scores = list(group.attrs.get("scores", [])) if len(group) else []
    return {
        "passage_id": passage.id,
        "replies": data.get("replies", []),
        "stats": data.get("stats", {}),
        "spans": [[s.start_char, s.end_char, s.label_, scores[i] if i < len(scores) else None]
                  for i, s in enumerate(group)],
    }


def _restore(bench: Benchmark, passage: GoldPassage, rec: Dict[str, Any], vocab: Any,
             spans_key: str, pipe_name: str) -> Doc:
    doc = bench.predicted_doc(passage, vocab)
    spans, scores = [], []
    for start, end, label, score in rec["spans"]:
        span = doc.char_span(start, end, label=label, alignment_mode="expand")
        if span is not None:
            spans.append(span)
            scores.append(score)
    doc.spans[spans_key] = SpanGroup(doc, name=spans_key, spans=spans, attrs={"scores": scores})
    doc.user_data[pipe_name] = {"replies": rec["replies"], "stats": rec["stats"]}
    return doc


@dataclass
class DatasetResult:
    name: str
    metrics: Dict[str, Any]
    predictions: List[Dict[str, Any]]


def run_benchmark(
    nlp: Language,
    bench: Benchmark,
    cache_path: Path,
    *,
    pipe_name: str = "universal_ner",
    model_config: Optional[Dict[str, Any]] = None,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: Optional[Callable[[int], None]] = None,
) -> DatasetResult:
    """Predict (resuming from ``cache_path``) and score one benchmark.

    nlp: a pipeline whose ``pipe_name`` component is ``universal_ner``; its
        labels are replaced per call by the benchmark's types (or a passage's
        own, :meth:`Benchmark.labels_of`: passages of a batch that are asked
        different types go to the pipeline in one call per set of types).
    cache_path: the JSONL cache of finished passages for this dataset.
    model_config: what identifies the model, for the cache's fingerprint.
    batch_size: passages per ``nlp.pipe`` batch (all their queries are sent
        to the student together); the cache is appended after each batch.
    progress: called with the number of passages just finished.
    """
    pipe = nlp.get_pipe(pipe_name)
    spans_key = pipe.spans_key
    if not pipe.store_replies:
        raise ValueError(f"The '{pipe_name}' component needs store_replies = true for benchmarks")
    component_cfg = {"spans_key": spans_key, "max_passage_tokens": pipe.max_passage_tokens,
                     "window_overlap": pipe.window_overlap, "dataset": pipe.dataset,
                     "label_definitions": pipe.label_definitions, "threshold": pipe.score_threshold,
                     # what the adapter records (empty_bias, multi_label, threshold) changes
                     # the predictions
                     "multi_label": pipe.keeps_every_label,
                     "student_settings": pipe.student_settings}
    cache = PredictionCache(cache_path, _fingerprint(model_config or {}, bench, component_cfg),
                            overwrite=overwrite)
    todo = [p for p in bench.passages if p.id not in cache.records]
    from_cache = len(bench.passages) - len(todo)
    if progress and from_cache:
        progress(from_cache)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        by_labels: Dict[Tuple[str, ...], List[GoldPassage]] = {}
        for p in chunk:
            by_labels.setdefault(tuple(bench.labels_of(p)), []).append(p)
        records = []
        for labels, group in by_labels.items():
            docs = [bench.predicted_doc(p, nlp.vocab) for p in group]
            done = nlp.pipe(docs, batch_size=batch_size,
                            component_cfg={pipe_name: {"labels": list(labels)}})
            records += [_record(p, d, spans_key, pipe_name) for p, d in zip(group, done)]
        cache.add(records)
        if progress:
            progress(len(chunk))
    examples, predictions = [], []
    stats: Counter = Counter()
    replies, golds = [], []
    for passage in bench.passages:
        rec = cache.records[passage.id]
        pred = _restore(bench, passage, rec, nlp.vocab, spans_key, pipe_name)
        examples.append(Example(pred, bench.reference_doc(passage, nlp.vocab, spans_key)))
        stats.update(rec["stats"])
        for rep in rec["replies"]:
            predictions.append({
                "dataset": bench.name, "passage_id": passage.id, "type": rep["label"],
                "window": rep.get("window"), "reply": rep["reply"],
                "mentions": rep["mentions"], "error": rep["error"],
                "gold": passage.answers.get(rep["label"]),
            })
            replies.append(rep["reply"])
            golds.append(passage.answers.get(rep["label"], "[]"))
    scores = {k: (0.0 if v is None else v)  # nothing to score reads as 0 in reports
              for k, v in score_all(examples, spans_key=spans_key, replies_key=pipe_name).items()}
    key = f"spans_{spans_key}"
    uniner = uniner_string_counts(replies, golds)
    n_pred = sum(len(eg.predicted.spans[spans_key]) for eg in examples)
    strict_counts = []  # per passage: true positives, predicted, gold (strict spans)
    errors = {side: Counter(dict.fromkeys(ERROR_KINDS, 0)) for side in ("predicted", "gold")}
    for eg in examples:
        pred = {(sp.start_char, sp.end_char, sp.label_) for sp in eg.predicted.spans[spans_key]}
        gold = {(sp.start_char, sp.end_char, sp.label_) for sp in eg.reference.spans[spans_key]}
        strict_counts.append([len(pred & gold), len(pred), len(gold)])
        for side, kinds in error_kinds(pred, gold).items():
            errors[side].update(kinds)
    metrics = {
        "dataset": bench.name,
        "source": bench.source,
        "labels": bench.labels,
        "strict": {"p": scores[f"{key}_p"], "r": scores[f"{key}_r"], "f": scores[f"{key}_f"],
                   "per_type": scores[f"{key}_per_type"]},
        "partial": {"p": scores[f"{key}_partial_p"], "r": scores[f"{key}_partial_r"],
                    "f": scores[f"{key}_partial_f"],
                    "per_type": scores[f"{key}_partial_per_type"]},
        "uniner": {"p": uniner.p, "r": uniner.r, "f": uniner.f,
                   "reference": reference_prf(uniner), "tp": uniner.tp,
                   "n_pred": uniner.n_pred, "n_gold": uniner.n_gold,
                   "per_type": scores[f"{key}_uniner_per_type"]},
        "counts": {
            "passages": len(bench.passages),
            "passages_in_file": bench.stats.get("passages_in_file", len(bench.passages)),
            "passages_from_cache": from_cache,
            "windows": stats["windows"],  # > passages: some passage was cut into windows
            "queries": stats["queries"],
            "parse_failures": stats["parse_failures"],
            "mentions": stats["mentions"],
            "mentions_not_found": stats["mentions_not_found"],
            "gold_spans": sum(len(p.spans) for p in bench.passages),
            "predicted_spans": n_pred,
            "gold_mentions_not_found": bench.stats.get("gold_mentions_not_found", 0),
        },
        "strict_counts": strict_counts,
        "errors": {side: dict(kinds) for side, kinds in errors.items()},
    }
    return DatasetResult(bench.name, metrics, predictions)


def averages(per_column: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Macro averages of strict / partial / uniner F over the suite's domains and overall."""
    out: Dict[str, Dict[str, float]] = {}
    groups = dict(DOMAINS)
    groups["overall"] = list(per_column)
    for group, columns in groups.items():
        present = [c for c in columns if c in per_column]
        if not present:
            continue
        out[group] = {
            metric: sum(per_column[c][metric]["f"] for c in present) / len(present)
            for metric in ("strict", "partial", "uniner")
        }
        out[group]["datasets"] = len(present)  # type: ignore[assignment]
        interval = bootstrap_interval([per_column[c].get("strict_counts") for c in present])
        if interval is not None:
            out[group]["strict_ci95"] = interval  # type: ignore[assignment]
    return out


def bootstrap_interval(
    per_set: Sequence[Optional[Sequence[Sequence[int]]]], resamples: int = 1000, seed: int = 0
) -> Optional[List[float]]:
    """95% bootstrap interval of the average strict F1 over several sets.

    per_set: for each set, per passage (true positives, predicted, gold). Each
    resample draws every set's passages with replacement, computes each set's
    micro F1 and averages them; RETURNS the 2.5th and 97.5th percentiles, or
    None when a set has no per-passage counts.
    """
    import numpy as np

    if not per_set or any(not counts for counts in per_set):
        return None
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(counts, dtype=float) for counts in per_set]
    averages = np.zeros(resamples)
    for counts in arrays:
        picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
        tp, pred, gold = (counts[:, k][picks].sum(axis=1) for k in range(3))
        denom = pred + gold
        averages += np.divide(2 * tp, denom, out=np.zeros(resamples), where=denom > 0)
    averages /= len(arrays)
    low, high = np.percentile(averages, [2.5, 97.5])
    return [float(low), float(high)]


_KIND_NAMES = {"exact": ("right", "found"), "wrong_type": ("wrong type", "wrong type"),
               "boundary": ("boundary", "boundary"),
               "boundary_and_type": ("boundary and type", "boundary and type"),
               "none": ("spurious", "missed")}


def error_table(per_column: Dict[str, Dict[str, Any]]) -> str:
    """Where the strict errors come from, per dataset (:func:`.metrics.error_kinds`):
    the predicted spans by what they meet in the gold, then the gold spans by what
    they meet in the predictions, each as a share (%) of its side. Empty when no
    column has the counts (metrics written before they were kept)."""
    columns = [c for c in per_column if "errors" in per_column[c]]
    if not columns:
        return ""
    lines = []
    for side, what in (("predicted", "predicted spans"), ("gold", "gold spans")):
        names = [_KIND_NAMES[k][side == "gold"] for k in ERROR_KINDS]
        lines += [f"| {what} | n | " + " | ".join(f"{n} %" for n in names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for c in columns:
            kinds = per_column[c]["errors"][side]
            total = sum(kinds.values())
            cells = [f"{100 * kinds[k] / total:.0f}" if total else "-" for k in ERROR_KINDS]
            lines.append(f"| {c} | {total:,} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown_table(per_column: Dict[str, Dict[str, Any]], *, title: str = "ours",
                   note: str = "") -> str:
    """The paper's zero-shot rows beside ours (F1 × 100), one column per dataset + Avg.

    Paper rows are shown only when every column is a suite dataset. When every
    column has its ``counts``, a last row gives n: passages (queries) per
    dataset, their totals under Avg.
    """
    columns = list(per_column)
    suite = all(c in ZERO_SHOT for c in columns)
    if suite:
        columns = [c for c in ZERO_SHOT if c in per_column]
    header = ["Model"] + columns + ["Avg"]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    if suite:
        full = len(columns) == len(ZERO_SHOT)
        for model, row in PAPER_ZERO_SHOT.items():
            avg = row["Avg"] if full else sum(row[c] for c in columns) / len(columns)
            cells = [f"{row[c]:.1f}" for c in columns] + [f"{avg:.1f}"]
            lines.append(f"| {model} (paper) | " + " | ".join(cells) + " |")
    for metric, label in (("uniner", "UniNER string F1"), ("strict", "strict span F1"),
                          ("partial", "partial-match F1")):
        vals = [100 * per_column[c][metric]["f"] for c in columns]
        cells = [f"{v:.1f}" for v in vals] + [f"{sum(vals) / len(vals):.1f}"]
        lines.append(f"| {title}: {label} | " + " | ".join(cells) + " |")
    if all("counts" in per_column[c] for c in columns):
        sizes = [(per_column[c]["counts"]["passages"], per_column[c]["counts"]["queries"])
                 for c in columns]
        sizes.append((sum(p for p, _ in sizes), sum(q for _, q in sizes)))
        lines.append("| n: passages (queries) | "
                     + " | ".join(f"{p:,} ({q:,})" for p, q in sizes) + " |")
    text = "\n".join(lines) + "\n"
    interval = bootstrap_interval([per_column[c].get("strict_counts") for c in columns])
    if interval is not None:
        text += (f"\nAverage strict span F1, 95% bootstrap interval (passages resampled within "
                 f"each set, 1,000 times): {100 * interval[0]:.1f} to {100 * interval[1]:.1f}.\n")
    if note:
        text += "\n" + note.strip() + "\n"
    return text
