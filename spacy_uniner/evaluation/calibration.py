"""Choosing ``empty_bias`` on labelled data: one student run scores every bias.

The student answers each query once with its first token kept off the empty
list, and records by how many nats it preferred ``[]`` there
(:meth:`~spacy_uniner.models.hf.HFStudent.generate_with_margins`). With
``empty_bias = b`` it would answer ``[]`` where that margin exceeds ``b`` and
give that reply otherwise, so the pipeline is replayed from those replies for
every ``b`` without running the model again.
"""

import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..models.base import Generation

EMPTY = Generation("[]")
DEFAULT_BIASES = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


class MarginReplay:
    """A student for the component that replays an HFStudent's margin run at ``bias``."""

    def __init__(self, student: Any, bias: float = 0.0) -> None:
        if not hasattr(student, "generate_with_margins"):
            raise TypeError(
                f"calibration needs a student with generate_with_margins "
                f"(spacy_uniner.HFStudent), not {type(student).__name__}"
            )
        self.student = student
        self.bias = bias
        self.seen: Dict[str, Tuple[Generation, float]] = {}

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return self.student.token_offsets(text)

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        todo = [p for p in dict.fromkeys(prompts) if p not in self.seen]
        if todo:
            self.seen.update(zip(todo, self.student.generate_with_margins(todo)))
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
    """
    from .runner import run_benchmark

    if not biases:
        raise ValueError("no biases to sweep")
    unknown = sorted(set(report_only) - set(benches))
    if unknown or not set(benches) - set(report_only):
        raise ValueError(f"report_only {list(report_only)} must name some, not all, of the "
                         f"benchmarks {list(benches)}")
    chosen = [name for name in benches if name not in report_only]
    from ..component import check_threshold

    for value in thresholds:
        check_threshold(value)
    pipe = nlp.get_pipe(pipe_name)
    student, setting, cutoff = pipe.model, pipe.multi_label, pipe.threshold
    replay = MarginReplay(student)
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
