"""The actors' side of an extraction: load the pipeline once, annotate a batch of documents.

:class:`ExtractPredictor` is a Ray Data callable class (``compute=ActorPoolStrategy``,
``num_gpus`` per actor): its ``__init__`` loads the pipeline (:class:`PipelineSpec`)
and answers full-width warm-up texts (:func:`warm_up_texts`); its ``__call__``
takes a block of documents and RETURNS plain columns (:func:`.store.result_schema`):
per document its status, error and entities. A document that fails is recorded
with its error, never dropped.
"""

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .store import result_schema

logger = logging.getLogger("spacy_uniner")

MAX_ERROR_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class PipelineSpec:
    """Which pipeline the actors load: a saved one (``pipeline``) or a fresh one over ``model``.

    labels: the entity types asked for (passed per call, also to a saved pipeline).
    model: "default", "smollm2-135m-instruct", a local HF folder or a cached hub id.
    pipeline: a folder written by ``nlp.to_disk`` holding a ``universal_ner``
        component; its own student settings are used.
    adapter, device, max_new_tokens, student_batch_size: HFStudent settings for ``model``.
    """

    labels: Tuple[str, ...]
    model: str = "default"
    pipeline: Optional[str] = None
    adapter: Optional[str] = None
    device: str = "cpu"
    max_new_tokens: int = 96
    student_batch_size: int = 16

    def load(self) -> Any:
        """RETURNS (Language): the pipeline (a student loads its weights on first use)."""
        if self.pipeline is not None:
            import spacy

            return spacy.load(self.pipeline)
        from ..pipeline import build_pipeline

        return build_pipeline(
            list(self.labels),
            self.model,
            max_new_tokens=self.max_new_tokens,
            adapter=self.adapter,
            device=self.device,
            batch_size=self.student_batch_size,
        )


def find_component(nlp: Any, source: str) -> Tuple[str, Any]:
    """RETURNS (Tuple[str, UniversalNER]): the pipeline's ``universal_ner`` component."""
    from ..component import UniversalNER

    found = [(name, pipe) for name, pipe in nlp.pipeline if isinstance(pipe, UniversalNER)]
    if len(found) != 1:
        raise ValueError(
            f"{source}: expected one universal_ner component, found {len(found)} "
            f"(pipeline: {nlp.pipe_names})"
        )
    return found[0]


def error_message(err: BaseException) -> str:
    message = _ANSI.sub("", f"{type(err).__name__}: {err}")  # Ray colours its tracebacks
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


WARM_UP_TEXT = "Ada Lovelace wrote the first program in London in 1843."
_WARM_UP_SENTENCES = (
    WARM_UP_TEXT,
    "Grace Hopper worked on the UNIVAC I at Remington Rand in Philadelphia.",
    "Alan Turing was born in Maida Vale, London, in 1912.",
)


def warm_up_texts(component: Any, labels: Sequence[str], most: int) -> List[str]:
    """RETURNS the texts an actor answers before its first batch: full windows
    (``max_passage_tokens`` student tokens each), as many as fill the rows its
    student decodes together (``batch_size`` queries, one per label and window),
    at most ``most``; each starts differently, so none shares another's passage.

    A batch's largest buffers (its keys and values, a full prefill) are then
    allocated and touched at start-up: a model that runs out of memory at full
    width fails before it takes a batch, and the first batch is not slowed by
    fresh pages (on a virtual machine, two processes touching fresh memory at
    once are slow at it)."""
    rows = max(1, int(getattr(component.model, "batch_size", 1) or 1))
    count = max(1, min(most, -(-rows // max(1, len(labels)))))
    tokens = component.max_passage_tokens
    body = " ".join(_WARM_UP_SENTENCES * (1 + 8 * tokens // len(" ".join(_WARM_UP_SENTENCES))))
    texts = []
    for i in range(count):
        text = f"Note {i + 1}. {body}"
        offsets = component.model.token_offsets(text)
        texts.append(text[: offsets[tokens - 1][1]] if len(offsets) > tokens else text)
    return texts


class ExtractPredictor:
    """Ray Data callable class: loads the pipeline once, annotates a batch of documents.

    ``__call__`` takes columns ``doc_id``, ``text`` and optionally ``input_error``
    (a Mapping of sequences or a pyarrow Table) and RETURNS a pyarrow Table with
    one row per input document: doc_id, status ("ok" / "error"), error and its
    entities. A document that fails is recorded with the error; when a batch of
    the component fails, its documents are tried one by one so that only the
    failing ones are marked.
    """

    def __init__(self, spec: PipelineSpec, batch_size: int = 16, quiet: bool = False) -> None:
        if quiet:  # this actor's process: no load bars or library warnings (cli_logging)
            from ..cli_logging import quiet_libraries

            quiet_libraries()
        self.spec = spec
        self.batch_size = batch_size
        self.nlp = spec.load()
        self.name, component = find_component(self.nlp, spec.pipeline or spec.model)
        self.spans_key = component.spans_key
        self.labels = list(spec.labels)
        # Load the weights and answer full-width texts now (warm_up_texts): a model
        # that cannot load or run (a GPU out of memory) stops the run when the actors
        # start, instead of marking every document as an error; the first batch then
        # runs at full speed.
        load = getattr(component.model, "load", None)
        if callable(load):
            load()
        warm_up = warm_up_texts(component, self.labels, most=batch_size)
        started = time.perf_counter()
        list(self.nlp.pipe(warm_up, component_cfg={self.name: {"labels": self.labels}}))
        logger.info(
            "Warm-up: %d texts of up to %d tokens x %d labels in %.1f s",
            len(warm_up),
            component.max_passage_tokens,
            len(self.labels),
            time.perf_counter() - started,
        )
        self._failed: Dict[int, BaseException] = {}
        self.nlp.set_error_handler(self._record_failure)

    def _record_failure(self, name: str, proc: Any, docs: List[Any], err: Exception) -> None:
        for doc in docs:
            self._failed[doc._context] = err

    def _annotate(
        self, items: List[Tuple[str, int]]
    ) -> Tuple[Dict[int, Any], Dict[int, BaseException]]:
        """Run the pipeline over (text, index) pairs; RETURNS docs and failures by index."""
        self._failed = {}
        docs: Dict[int, Any] = {}
        try:
            for doc, index in self.nlp.pipe(
                items,
                as_tuples=True,
                batch_size=self.batch_size,
                component_cfg={self.name: {"labels": self.labels}},
            ):
                docs[index] = doc
        except Exception as err:  # outside a component (e.g. the tokenizer): the rest failed
            for _, index in items:
                if index not in docs:
                    self._failed.setdefault(index, err)
        return docs, dict(self._failed)

    def _entities(self, doc: Any) -> List[Dict[str, Any]]:
        group = doc.spans[self.spans_key] if self.spans_key in doc.spans else []
        scores = list(group.attrs.get("scores", [])) if len(group) else []
        return [
            {
                "label": span.label_,
                "start_char": span.start_char,
                "end_char": span.end_char,
                "text": span.text,
                "score": float(score),
            }
            for span, score in zip(group, scores)
        ]

    def __call__(self, batch: Union[Mapping[str, Sequence[Any]], Any]) -> Any:
        import pyarrow as pa

        columns = batch.to_pydict() if isinstance(batch, pa.Table) else batch
        ids = [str(i) for i in columns["doc_id"]]
        texts = list(columns["text"])
        input_errors = (
            list(columns["input_error"]) if "input_error" in columns else [None] * len(ids)
        )
        rows: List[Dict[str, Any]] = [
            {"doc_id": doc_id, "status": "error", "error": error, "entities": []}
            for doc_id, error in zip(ids, input_errors)
        ]
        todo = [(texts[i], i) for i, row in enumerate(rows) if row["error"] is None]
        docs, failed = self._annotate(todo)
        for index in sorted(failed):
            if len(todo) > 1:  # find out which documents of the failed batch are at fault
                single, single_failed = self._annotate([(texts[index], index)])
                docs.update(single)
                failed[index] = single_failed.get(index, failed[index])
                if index in single:
                    del failed[index]
        for index, doc in docs.items():
            rows[index].update(status="ok", error=None, entities=self._entities(doc))
        for index, err in failed.items():
            rows[index]["error"] = error_message(err)
            logger.info("Document %s failed: %s", ids[index], rows[index]["error"])
        return pa.Table.from_pylist(rows, schema=result_schema())
