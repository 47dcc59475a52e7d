"""Choosing ``empty_bias`` on labelled data: one student run scores every bias.

The student answers each query once with its first token kept off the empty
list, and records by how many nats it preferred ``[]`` there
(:meth:`~spacy_uniner.models.hf.HFStudent.generate_with_margins`). With
``empty_bias = b`` it would answer ``[]`` where that margin exceeds ``b`` and
give that reply otherwise, so the pipeline is replayed from those replies for
every ``b`` without running the model again. With a replies file
(:func:`replies_cache`) those replies are kept on disk as they come, so an
interrupted sweep resumes and a later sweep over other settings asks nothing.
"""

import hashlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..component import check_threshold
from ..default_student import file_sha256
from ..models.base import Generation
from .runner import PredictionCache, run_benchmark

EMPTY = Generation("[]")
DEFAULT_BIASES = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def _prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf8")).hexdigest()


def student_fingerprint(student: Any) -> str:
    """What decides a student's margin-run replies: its base, adapter (by content),
    dtype, reply length and decoding (not threads or batch size)."""
    adapter = getattr(student, "adapter", None)
    weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
    payload = {
        "name": getattr(student, "name", type(student).__name__),
        "adapter": file_sha256(weights) if weights is not None and weights.exists() else adapter,
        **{key: getattr(student, key, None)
           for key in ("dtype", "max_new_tokens", "grounded", "prefix_sharing")},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf8")).hexdigest()[:16]


def replies_cache(path: Path, student: Any, overwrite: bool = False) -> PredictionCache:
    """A file of ``student``'s margin-run replies, one JSON line per prompt, read back
    if it exists; one written for another student is an error naming it."""
    return PredictionCache(
        Path(path), student_fingerprint(student), overwrite=overwrite, key="prompt",
        remedy="give another --replies file, or --overwrite to ask the student again")


class MarginReplay:
    """A student for the component that replays an HFStudent's margin run at ``bias``.

    cache: replies already given (read first) and where new ones are appended.
    """

    def __init__(self, student: Any, bias: float = 0.0,
                 cache: Optional[PredictionCache] = None) -> None:
        if not hasattr(student, "generate_with_margins"):
            raise TypeError(
                f"calibration needs a student with generate_with_margins "
                f"(spacy_uniner.HFStudent), not {type(student).__name__}"
            )
        self.student = student
        self.bias = bias
        self.cache = cache
        self.seen: Dict[str, Tuple[Generation, float]] = {}

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return self.student.token_offsets(text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        todo = [p for p in dict.fromkeys(prompts) if p not in self.seen]
        if todo and self.cache is not None:
            for p in todo:
                rec = self.cache.records.get(_prompt_key(p))
                if rec is not None:
                    offsets = tuple(tuple(o) for o in rec["token_offsets"])
                    gen = Generation(rec["text"], offsets, tuple(rec["token_logprobs"]))
                    self.seen[p] = (gen, rec["margin"])
            todo = [p for p in todo if p not in self.seen]
        if todo:
            answered = self.student.generate_with_margins(todo)
            self.seen.update(zip(todo, answered))
            if self.cache is not None:
                self.cache.add({"prompt": _prompt_key(p), "text": gen.text,
                                "token_offsets": gen.token_offsets,
                                "token_logprobs": gen.token_logprobs, "margin": margin}
                               for p, (gen, margin) in zip(todo, answered))
        return [EMPTY if self.seen[p][1] > self.bias else self.seen[p][0] for p in prompts]


def sweep_empty_bias(
    nlp: Any,
    benches: Mapping[str, Any],
    biases: Sequence[float] = DEFAULT_BIASES,
    *,
    pipe_name: str = "universal_ner",
    batch_size: int = 4,
    progress: Any = None,
    multi_labels: Sequence[bool] = (),
    thresholds: Sequence[float] = (),
    report_only: Sequence[str] = (),
    replies: Optional[PredictionCache] = None,
) -> Dict[str, Any]:
    """Strict, partial and UniNER-string F1 of every bias on every benchmark
    (and, with ``multi_labels``, of every bias with each of those ``multi_label``
    settings of the component: one type per span or all of them; with
    ``thresholds``, with each of those span-score thresholds too).

    nlp: a pipeline whose ``pipe_name`` component (store_replies on) runs an
        HFStudent; its student is swapped for a :class:`MarginReplay` for the
        sweep and put back after.
    RETURNS: {"rows": [{"empty_bias", "multi_label" (with multi_labels),
        "threshold" (with thresholds), "strict_f", "partial_f", "uniner_f",
        "per_set": {name: {...}}}], "best": the row with the highest average
        strict F1 (among ties the smallest bias, then multi_label true, then the
        lowest threshold), "passages", "queries"}.
    report_only: names of ``benches`` scored in ``per_set`` but left out of the
        averages, the choice and the counts (e.g. the plain dev sets beside their
        wide versions, whose queries they share: the model answers each prompt once).
    replies: a :func:`replies_cache` of this student: prompts answered there are
        not asked again, new answers are appended as they come.
    """
    if not biases:
        raise ValueError("no biases to sweep")
    unknown = sorted(set(report_only) - set(benches))
    if unknown or not set(benches) - set(report_only):
        raise ValueError(f"report_only {list(report_only)} must name some, not all, of the "
                         f"benchmarks {list(benches)}")
    chosen = [name for name in benches if name not in report_only]
    for value in thresholds:
        check_threshold(value)
    pipe = nlp.get_pipe(pipe_name)
    student, setting, cutoff = pipe.model, pipe.multi_label, pipe.threshold
    replay = MarginReplay(student, cache=replies)
    pipe.model = replay
    rows = []
    choices = list(dict.fromkeys(multi_labels)) or [None]  # None: as the component has it
    cutoffs = sorted(set(thresholds)) or [None]
    grid = [(b, m, t) for b in sorted(set(biases)) for m in choices for t in cutoffs]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n, (bias, multi, threshold) in enumerate(grid):
                replay.bias = bias
                pipe.multi_label = setting if multi is None else multi
                pipe.threshold = cutoff if threshold is None else threshold
                per_set = {}
                for name, bench in benches.items():
                    metrics = run_benchmark(
                        nlp, bench, Path(tmp) / f"{name}-{n}.jsonl",
                        model_config={"empty_bias": bias}, batch_size=batch_size,
                        progress=progress if n == 0 else None,
                    ).metrics
                    per_set[name] = {
                        "strict_f": metrics["strict"]["f"],
                        "strict_p": metrics["strict"]["p"],
                        "strict_r": metrics["strict"]["r"],
                        "partial_f": metrics["partial"]["f"],
                        "uniner_f": metrics["uniner"]["f"],
                        "passages": metrics["counts"]["passages"],
                        "queries": metrics["counts"]["queries"],
                    }
                rows.append({
                    "empty_bias": bias,
                    **({} if multi is None else {"multi_label": multi}),
                    **({} if threshold is None else {"threshold": threshold}),
                    **{key: statistics.mean(per_set[name][key] for name in chosen)
                       for key in ("strict_f", "partial_f", "uniner_f")},
                    "per_set": per_set,
                })
    finally:
        pipe.model, pipe.multi_label, pipe.threshold = student, setting, cutoff
    best = max(rows, key=lambda r: (r["strict_f"], -r["empty_bias"], r.get("multi_label", True),
                                    -r.get("threshold", 0.0)))
    first = rows[0]["per_set"]
    return {
        "rows": rows,
        "best": best,
        "averaged": chosen,
        "passages": sum(first[name]["passages"] for name in chosen),
        "queries": sum(first[name]["queries"] for name in chosen),
    }
