"""An extraction on Ray Data: check the input, run the actors, write each batch once.

:func:`extract` reads and checks the whole input in the driver
(:mod:`.inputs`), refuses what it must before anything is written, puts the
documents still to do into Ray's object store as blocks, runs them through a
pool of :class:`~.predictor.ExtractPredictor` actors and writes every batch
that comes back as one part (:mod:`.store`); at the end, also of a run that
failed, the outputs and ``summary.json`` (:mod:`.summary`) are derived from
the parts.
"""

import logging
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..documents import read_input
from .inputs import InputCheck, check_input, document_blocks, halves
from .predictor import ExtractPredictor, PipelineSpec, find_component
from .store import (
    PARTS_DIR,
    atomic_write_table,
    check_manifest,
    read_parts,
    write_manifest,
    write_outputs,
)
from .summary import write_summary
from ..ray_session import start_ray

logger = logging.getLogger("spacy_uniner")

DEDUPE_POLICIES = ("error", "first")


@dataclass
class ExtractOptions:
    input: Path
    output: Path
    labels: Sequence[str]
    model: str = "default"
    pipeline: Optional[Path] = None
    adapter: Optional[Path] = None
    actors: int = 2
    num_gpus: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 16
    student_batch_size: int = 16
    max_new_tokens: int = 96
    text_field: str = "text"
    id_field: Optional[str] = None
    retry_errors: bool = False
    limit: Optional[int] = None  # this run: only the first N remaining documents, in input order
    actor_retries: int = 3  # times a batch is retried on a fresh actor when its actor dies
    ray_address: Optional[str] = None  # default: $RAY_ADDRESS, else a local Ray
    progress: bool = True
    dedupe: str = "error"  # a repeated id: "error" refuses the input; "first" keeps the first row
    append: bool = False  # add another input's documents to a folder holding results
    quiet: bool = False  # Ray's, Ray Data's and transformers' own messages off (cli_logging)

    def spec(self) -> PipelineSpec:
        return PipelineSpec(
            labels=tuple(self.labels),
            model=self.model,
            pipeline=str(Path(self.pipeline).resolve()) if self.pipeline else None,
            adapter=str(Path(self.adapter).resolve()) if self.adapter else None,
            device="cuda" if self.num_gpus > 0 else "cpu",
            max_new_tokens=self.max_new_tokens,
            student_batch_size=self.student_batch_size,
        )

    def validate(self) -> None:
        from ..component import normalize_labels

        if self.actors < 1 or self.batch_size < 1 or self.student_batch_size < 1:
            raise ValueError(
                f"actors, batch size and student batch size must be positive, got "
                f"{self.actors}, {self.batch_size} and {self.student_batch_size}"
            )
        if self.num_gpus < 0 or self.cpus_per_actor < 0:
            raise ValueError(
                f"num_gpus and cpus_per_actor must be >= 0, "
                f"got {self.num_gpus} and {self.cpus_per_actor}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive, got {self.limit}")
        if self.dedupe not in DEDUPE_POLICIES:
            raise ValueError(f"dedupe must be one of {DEDUPE_POLICIES}, got {self.dedupe!r}")
        if self.pipeline is not None and (self.model != "default" or self.adapter is not None):
            raise ValueError("give a pipeline folder or a model (and adapter), not both")
        if self.pipeline is not None and not Path(self.pipeline).is_dir():
            raise FileNotFoundError(f"{self.pipeline}: no such pipeline folder")
        if self.adapter is not None and not Path(self.adapter).is_dir():
            raise FileNotFoundError(f"{self.adapter}: no such adapter folder")
        looks_local = self.model.startswith(("/", "./", "../", "~"))
        if looks_local and not Path(self.model).expanduser().is_dir():
            raise FileNotFoundError(f"{self.model}: no such model folder")
        self.labels = normalize_labels(list(self.labels))
        if not self.labels:
            raise ValueError("give at least one label, e.g. --labels 'person,organization'")

    def manifest(self) -> Dict[str, Any]:
        spec = self.spec()
        return {
            "labels": list(spec.labels),
            "model": None if spec.pipeline else spec.model,
            "pipeline": spec.pipeline,
            "adapter": spec.adapter,
            "max_new_tokens": None if spec.pipeline else spec.max_new_tokens,
            "text_field": self.text_field,
            "id_field": self.id_field,
        }


def _check_resources(options: ExtractOptions) -> None:
    import ray

    total = ray.cluster_resources()
    wanted = {
        "CPU": options.actors * options.cpus_per_actor,
        "GPU": options.actors * options.num_gpus,
    }
    for resource, amount in wanted.items():
        if amount > total.get(resource, 0.0) + 1e-9:
            logger.warning(
                "%d actors need %g %s in all; the cluster has %g now "
                "(the run waits until an autoscaler adds them)",
                options.actors,
                amount,
                resource,
                total.get(resource, 0.0),
            )


def _predictions(
    todo: Any, options: ExtractOptions, spec: PipelineSpec, predictor: type
) -> Iterable[Any]:
    import ray.data

    with warnings.catch_warnings():
        # Ray 2.60 takes max_task_retries only through the deprecated **ray_remote_args;
        # without it a batch that keeps crashing its actor would be retried forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        predicted = todo.map_batches(
            predictor,
            fn_constructor_kwargs={
                "spec": spec,
                "batch_size": options.batch_size,
                "quiet": options.quiet,
            },
            # A CPU actor takes one batch at a time, so the last batches go to whichever
            # actor is free (a batch queued behind a slow one leaves the other idle at the
            # end); a GPU actor keeps one queued so that it never waits for input.
            compute=ray.data.ActorPoolStrategy(
                size=options.actors,
                max_tasks_in_flight_per_actor=2 if options.num_gpus else 1,
            ),
            num_gpus=options.num_gpus or None,
            num_cpus=options.cpus_per_actor,
            batch_size=None,  # a whole block per call: the driver has sized them
            batch_format="pyarrow",
            max_task_retries=options.actor_retries,
        )
    return predicted.iter_batches(batch_size=None, batch_format="pyarrow")


def _refusals(
    options: "ExtractOptions",
) -> Tuple[Path, Dict[str, Any], Any, InputCheck, List[Dict[str, Any]], bool]:
    """Everything that refuses a run, before anything is written; RETURNS the output
    folder, the manifest, the input, what :func:`check_input` found, the inputs the
    folder's results will be for and whether this input is added to them."""
    options.validate()
    spec = options.spec()
    out = Path(options.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: a file, not a folder; give --output a folder")
    manifest = options.manifest()
    check_manifest(out, manifest)  # other settings: refused before the input is read
    source = read_input(Path(options.input), options.text_field, options.id_field)
    find_component(spec.load(), spec.pipeline or spec.model)  # fail here, not in every actor
    check = check_input(source)
    if not check.rows:
        raise ValueError(f"{options.input}: no documents in the input; nothing to extract")
    if check.duplicate_rows and options.dedupe == "error":
        raise ValueError(check.duplicates_message(options.input))
    input_record = {
        "path": str(Path(options.input).resolve()),
        "documents": check.documents,
        "fingerprint": check.fingerprint,
    }
    inputs = check_manifest(out, manifest, input_record, append=options.append)
    if check.duplicate_rows:
        logger.warning(
            "%s: %d rows repeat an id of an earlier row (%s); kept the first of each "
            "(--dedupe first)",
            options.input,
            check.duplicate_rows,
            "; ".join(check.duplicates),
        )
    appended = len(inputs) > 1 and inputs[-1] is input_record
    return out, manifest, source, check, inputs, appended


def _write_batches(
    batches: Iterable[Any], out: Path, run_id: str, counters: Counter, bar: Any
) -> None:
    """Write every batch of results as one part, each document once; count into ``counters``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seen: set = set()
    for sequence, batch in enumerate(batches):
        ids = batch.column("doc_id").to_pylist()
        # Every id is sent once; a result that came back twice is not written twice.
        fresh = [doc_id not in seen for doc_id in ids]
        counters["repeated_results"] += fresh.count(False)
        if not all(fresh):
            batch = batch.filter(pa.array(fresh))
        if batch.num_rows:
            batch = batch.append_column("run_id", pa.array([run_id] * batch.num_rows, pa.string()))
            name = f"part-{time.time_ns():020d}-{sequence:06d}.parquet"
            atomic_write_table(batch, out / PARTS_DIR / name)
            seen.update(batch.column("doc_id").to_pylist())
            ok = int(pc.sum(pc.equal(batch.column("status"), "ok")).as_py() or 0)
            counters["ok"] += ok
            counters["errors"] += batch.num_rows - ok
            counters["entities"] += int(
                pc.sum(pc.list_value_length(batch.column("entities"))).as_py() or 0
            )
        bar.update(len(ids))
        bar.set_postfix(entities=counters["entities"], errors=counters["errors"], refresh=False)


def extract(
    options: ExtractOptions,
    echo: Callable[[str], None] = logger.info,
    *,
    predictor: type = ExtractPredictor,
) -> Dict[str, Any]:
    """Run the pipeline over ``options.input``; RETURNS the content of ``summary.json``.

    Refused before anything is written (no output folder is made, nothing in an existing
    one changes): bad options, an input without documents, rows repeating an id (unless
    ``dedupe="first"``), a folder holding results for other settings, or for another
    input (unless ``append``).

    predictor: the Ray Data callable class the actors run: :class:`ExtractPredictor`
        or a subclass of it (e.g. one that records timings, as bench/ray_scaling.py does).
    """
    if not (isinstance(predictor, type) and issubclass(predictor, ExtractPredictor)):
        raise TypeError(f"predictor must be ExtractPredictor or a subclass, not {predictor!r}")
    import pyarrow.compute as pc
    import ray
    import ray.data
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out, manifest, source, check, inputs, appended = _refusals(options)
    spec = options.spec()
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(exist_ok=True)
    write_manifest(out, manifest, inputs)
    for stale in (out / PARTS_DIR).glob(".part-*"):  # a killed run's unfinished write
        stale.unlink()

    previous = read_parts(out)
    keep = previous
    if options.retry_errors:
        keep = previous.filter(pc.equal(previous.column("status"), "ok"))
    done = keep.column("doc_id").to_pylist()
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"

    started = start_ray(options.ray_address, quiet=options.quiet)
    context = ray.data.DataContext.get_current()
    progress_bars = context.enable_progress_bars
    context.enable_progress_bars = False  # one bar of our own instead of one per operator
    counters: Counter = Counter()
    extract_start: Optional[float] = None
    error: Optional[BaseException] = None
    try:
        blocks = document_blocks(
            source.rows(),
            done=done,
            limit=options.limit,
            # One block per actor call: Ray Data gives an actor a whole block, and its
            # results come back (and are written) as one part.
            block_rows=options.batch_size,
        )
        # The whole input is read before the actors take the CPUs; the blocks wait in
        # Ray's object store, not here.
        refs, total, last = [], 0, []
        for block in blocks:
            last.append(block)
            total += block.num_rows
            if len(last) > options.actors:
                refs.append(ray.put(last.pop(0)))
        refs.extend(ray.put(block) for block in halves(last))
        echo(
            f"{options.input}: {total} documents to extract, {previous.num_rows} already in "
            f"{out} ({'errors retried' if options.retry_errors else 'kept'}: "
            f"{previous.num_rows - len(done)} to redo); {options.actors} actors"
        )
        if total:
            _check_resources(options)
            extract_start = time.perf_counter()
            with tqdm(
                total=total, desc="extract", unit="doc", mininterval=0.5,
                disable=not options.progress,
            ) as bar:
                todo = ray.data.from_arrow_refs(refs)
                batches = _predictions(todo, options, spec, predictor)
                _write_batches(batches, out, run_id, counters, bar)
    except BaseException as err:
        error = err
        raise
    finally:
        context.enable_progress_bars = progress_bars
        if started:
            ray.shutdown()
        if counters["repeated_results"]:
            logger.warning(
                "%d results came back twice from Ray; each was written once",
                counters["repeated_results"],
            )
        run = {
            "run_id": run_id,
            "input_documents": check.documents,
            "input_fingerprint": check.fingerprint,
            "ok": counters["ok"],
            "errors": counters["errors"],
            "entities": counters["entities"],
            "duplicate_ids": check.duplicate_rows,
            "repeated_texts": check.repeated_texts,
            "already_done": len(done),
            "appended": appended,
        }
        summary = write_summary(
            out, options, write_outputs(out, read_parts(out)), run,
            error=error, started=start, extract_started=extract_start,
        )
    return summary
