"""Annotate a corpus with an LLM teacher on Ray: sample, ask, cache, parse, filter, write.

The driver reads and samples passages, looks each one up in the reply cache and
sends only the missing ones to a pool of Ray actors (``workers`` actors, each
with ``concurrency`` requests in flight) that share one :class:`RateLimiter`
actor. Every reply is committed to the cache as it arrives, so a killed run
resumes; passages that still fail after the bounded retries are written to
``errors.jsonl`` and asked again by the next run. The outputs are rebuilt from
the cache for the whole sample on every run:

* ``teacher.parquet`` and ``teacher.jsonl`` — one row per passage;
* ``errors.jsonl`` — passages with no reply yet;
* ``stats.json`` — counts, filter drops by reason, head/tail table, usage, cost.
"""

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..passages import Chunker, Passage
from .cache import ReplyCache, cache_key
from .client import (
    Secret,
    TeacherConfig,
    estimate_request_tokens,
    spacy_teacher_types,
    worker_actors,
)
from .corpus import (
    MAX_DOC_CHARS,
    MAX_FILE_BYTES,
    CorpusReport,
    load_student_tokenizer,
    read_documents,
    sample_passages,
)
from .filters import DROP_REASONS, filter_reply
from .limiter import limiter_actor
from .prompt import TeacherPrompt
from .stats import DEFAULT_PRICE_IN, DEFAULT_PRICE_OUT, entity_stats, estimate_cost
from ..ray_session import start_ray

logger = logging.getLogger("spacy_uniner")

OUTPUT_PARQUET = "teacher.parquet"
OUTPUT_JSONL = "teacher.jsonl"
ERRORS_FILE = "errors.jsonl"
STATS_FILE = "stats.json"
CACHE_FILE = "cache.sqlite"


@dataclass
class AnnotateOptions:
    corpus: Sequence[Path]
    out: Path
    num_passages: Optional[int] = None
    seed: int = 0
    text_field: str = "text"
    max_passage_tokens: int = 256
    tokenizer: Optional[str] = None  # default: the default student's tokenizer
    workers: int = 2
    concurrency: int = 4
    rpm: Optional[float] = None
    tpm: Optional[float] = None
    cache: Optional[Path] = None  # default: OUT/cache.sqlite
    price_in: float = DEFAULT_PRICE_IN
    price_out: float = DEFAULT_PRICE_OUT
    ray_address: Optional[str] = None
    progress: bool = True
    max_doc_chars: int = MAX_DOC_CHARS
    max_file_bytes: int = MAX_FILE_BYTES
    ask: bool = True  # False: only rebuild outputs from the cache
    quiet: bool = False  # Ray's start-up INFO lines off (command lines without -v)


def _schema():
    import pyarrow as pa

    usage = pa.struct(
        [
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("total_tokens", pa.int64()),
            ("estimated", pa.bool_()),
        ]
    )
    return pa.schema(
        [
            ("passage_id", pa.string()),
            ("passage_hash", pa.string()),
            ("text", pa.string()),
            ("entities", pa.list_(pa.list_(pa.string()))),
            ("teacher", pa.string()),
            ("prompt_version", pa.string()),
            ("prompt_fingerprint", pa.string()),
            ("raw_reply", pa.string()),
            ("usage", usage),
            ("finish_reason", pa.string()),
            ("parsed", pa.bool_()),
            ("repairs", pa.list_(pa.string())),
            ("dropped", pa.struct([(reason, pa.int64()) for reason in DROP_REASONS])),
            # a spaCy teacher's types (every one asked of every passage); null: open types
            ("closed_types", pa.list_(pa.string())),
        ]
    )


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


# Worker actors and the limiter, kept per (Ray job, workers, concurrency) so that
# several runs in one Ray session (a notebook, the tests) start them once.
_POOLS: Dict[tuple, tuple] = {}


def _pool(options: AnnotateOptions, teacher: TeacherConfig, prompt: TeacherPrompt, api_key: Secret):
    import ray

    context = ray.get_runtime_context()
    key = (context.gcs_address, context.get_job_id(), options.workers, options.concurrency)
    for fresh in (False, True):
        if fresh or key not in _POOLS:
            _drop_pool(key)
            _POOLS[key] = (
                limiter_actor(None, None),
                worker_actors(options.workers, options.concurrency),
            )
        limiter, actors = _POOLS[key]
        try:
            ray.get(limiter.configure.remote(options.rpm, options.tpm))
            ray.get([actor.configure.remote(teacher, prompt, api_key, limiter) for actor in actors])
            return key, actors
        except ray.exceptions.RayActorError:
            if fresh:  # a new pool that cannot start: a real error
                raise
    raise AssertionError("unreachable")


def _drop_pool(key: tuple) -> None:
    import ray

    limiter, actors = _POOLS.pop(key, (None, []))
    for actor in [*actors, limiter]:
        if actor is not None:
            try:
                ray.kill(actor)
            except Exception:  # already gone with an earlier Ray session
                pass


def _ask_teacher(
    todo: List[Passage],
    keys: Dict[str, str],
    cache: ReplyCache,
    options: AnnotateOptions,
    teacher: TeacherConfig,
    prompt: TeacherPrompt,
    api_key: Secret,
) -> Dict:
    """Send ``todo`` to the Ray worker pool; RETURNS run counters and failures."""
    import ray
    from tqdm.auto import tqdm

    started = start_ray(options.ray_address, quiet=options.quiet)
    pool_key = None
    failures: Dict[int, Dict] = {}
    counters = Counter()
    usage = Counter()
    asking = time.perf_counter()
    clean = False
    try:
        pool_key, actors = _pool(options, teacher, prompt, api_key)
        asking = time.perf_counter()
        max_pending = options.workers * options.concurrency + options.workers
        pending = {}
        next_index = 0
        name = teacher.teacher_name
        with tqdm(
            total=len(todo),
            desc="teacher",
            unit="passage",
            mininterval=0.5,
            disable=not options.progress,
        ) as bar:
            while next_index < len(todo) or pending:
                while next_index < len(todo) and len(pending) < max_pending:
                    actor = actors[next_index % len(actors)]
                    ref = actor.ask.remote(next_index, todo[next_index].text)
                    pending[ref] = next_index
                    next_index += 1
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    index = pending.pop(ref)
                    result = ray.get(ref)
                    passage = todo[index]
                    counters["calls"] += 1
                    counters["attempts"] += result.get("attempts", 0)
                    if result["ok"]:
                        cache.put(
                            keys[passage.hash],
                            name,
                            prompt.fingerprint,
                            passage.hash,
                            result["reply"],
                            result["usage"],
                            result.get("finish_reason"),
                        )
                        usage["prompt_tokens"] += result["usage"].get("prompt_tokens", 0)
                        usage["completion_tokens"] += result["usage"].get("completion_tokens", 0)
                    else:
                        failures[index] = result
                        logger.warning("Passage %s failed: %s", passage.id, result["error"])
                    bar.update(1)
                    bar.set_postfix(failed=len(failures), refresh=False)
        clean = True
    finally:
        # A run that stopped half-way leaves tasks queued on the actors: drop them.
        if pool_key is not None and (started or not clean):
            _drop_pool(pool_key)
        if started:
            ray.shutdown()
    counters["failed"] = len(failures)
    counters["ask_seconds"] = time.perf_counter() - asking
    return {"counters": counters, "usage": usage, "failures": failures}


def _write_outputs(out: Path, rows: List[Dict], errors: List[Dict], stats: Dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_schema())
    _atomic_write(out / OUTPUT_PARQUET, lambda p: pq.write_table(table, p))

    def write_jsonl(items: List[Dict]):
        def write(path: Path) -> None:
            with path.open("w", encoding="utf-8") as handle:
                for item in items:
                    handle.write(json.dumps(item, ensure_ascii=False) + "\n")

        return write

    _atomic_write(out / OUTPUT_JSONL, write_jsonl(rows))
    _atomic_write(out / ERRORS_FILE, write_jsonl(errors))
    _atomic_write(
        out / STATS_FILE,
        lambda p: p.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", "utf-8"),
    )


def annotate(
    options: AnnotateOptions,
    teacher: TeacherConfig,
    prompt: TeacherPrompt,
    api_key: Optional[Secret] = None,
    echo: Callable[[str], None] = logger.info,
) -> Dict:
    """Run the teacher over a corpus sample; RETURNS the content of ``stats.json``."""
    start = time.perf_counter()
    api_key = api_key if api_key is not None else Secret.from_env()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    report = CorpusReport()
    chunker = Chunker(load_student_tokenizer(options.tokenizer), options.max_passage_tokens)
    documents = read_documents(
        options.corpus, report, options.text_field, options.max_doc_chars, options.max_file_bytes
    )
    passages = sample_passages(documents, chunker, options.num_passages, options.seed, report)
    name = teacher.teacher_name
    # a spaCy teacher vouches for all its types; loading it here also fails early
    closed_types = spacy_teacher_types(teacher.model) if teacher.backend == "spacy" else None
    keys = {p.hash: cache_key(name, prompt.fingerprint, p.hash) for p in passages}
    cache = ReplyCache(options.cache or out / CACHE_FILE)
    try:
        cached = cache.get_many(keys.values())
        todo = [p for p in passages if keys[p.hash] not in cached]
        est_in = est_out = 0
        if closed_types is None:  # an LLM: requests cost tokens
            est_in = sum(estimate_request_tokens(prompt, p.text, 0) for p in todo)
            est_out = len(todo) * (prompt.max_tokens or teacher.expected_completion_tokens)
        est_cost = estimate_cost(est_in, est_out, options.price_in, options.price_out)
        echo(
            f"{len(passages)} passages sampled from {report.documents} documents; "
            f"{len(passages) - len(todo)} cached, {len(todo)} to ask {name}. "
            f"Estimated cost of this run: ${est_cost:.4f} "
            f"(~{est_in:,} prompt + ~{est_out:,} completion tokens)."
        )
        run = {"counters": Counter(), "usage": Counter(), "failures": {}}
        if todo and options.ask:
            run = _ask_teacher(todo, keys, cache, options, teacher, prompt, api_key)
        cached = cache.get_many(keys.values())
    finally:
        cache.close()

    rows, errors, drop_counts, repaired = [], [], Counter(), 0
    failures = {todo[i].hash: result for i, result in run["failures"].items()}
    for passage in passages:
        entry = cached.get(keys[passage.hash])
        if entry is None:
            failure = failures.get(passage.hash, {"error": "not asked (--no-ask)", "attempts": 0})
            errors.append(
                {
                    "passage_id": passage.id,
                    "passage_hash": passage.hash,
                    "text": passage.text,
                    "error": failure["error"],
                    "attempts": failure.get("attempts", 0),
                }
            )
            continue
        filtered = filter_reply(entry["reply"])
        drop_counts.update(filtered.drops)
        # A Python tuple list is the Fig. 1 format itself, not damage.
        repaired += any(r != "python literal" for r in filtered.repairs)
        usage = dict(entry["usage"])
        rows.append(
            {
                "passage_id": passage.id,
                "passage_hash": passage.hash,
                "text": passage.text,
                "entities": [list(pair) for pair in filtered.entities],
                "teacher": name,
                "prompt_version": prompt.version,
                "prompt_fingerprint": prompt.fingerprint,
                "raw_reply": entry["reply"],
                "usage": {
                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": int(usage.get("completion_tokens", 0)),
                    "total_tokens": int(usage.get("total_tokens", 0)),
                    "estimated": bool(usage.get("estimated", False)),
                },
                "finish_reason": entry.get("finish_reason"),
                "parsed": filtered.parsed,
                "repairs": filtered.repairs,
                "dropped": {reason: int(filtered.drops.get(reason, 0)) for reason in DROP_REASONS},
                "closed_types": closed_types,
            }
        )
    counted = entity_stats(rows)
    seconds = time.perf_counter() - start
    counters, run_usage = run["counters"], run["usage"]
    ask_seconds = float(counters.get("ask_seconds", 0.0))
    stats = {
        "teacher": name,
        "backend": teacher.backend,
        "base_url": teacher.base_url,
        "prompt_version": prompt.version,
        "prompt_fingerprint": prompt.fingerprint,
        "variant": prompt.variant,
        "out": str(out),
        "errors_file": str(out / ERRORS_FILE),
        **{k: v for k, v in counted.items() if k != "usage"},
        "usage": counted["usage"],
        "dropped": {reason: int(drop_counts.get(reason, 0)) for reason in DROP_REASONS},
        "repaired_replies": repaired,
        "failed_passages": len(errors),
        "price_per_million": [options.price_in, options.price_out],
        "estimated_cost_usd": estimate_cost(
            counted["usage"]["prompt_tokens"],
            counted["usage"]["completion_tokens"],
            options.price_in,
            options.price_out,
        ),
        "run": {
            "sampled": len(passages),
            "cache_hits": len(passages) - len(todo),
            "calls": int(counters.get("calls", 0)),
            "attempts": int(counters.get("attempts", 0)),
            "retries": int(counters.get("attempts", 0) - counters.get("calls", 0)),
            "failed": len(errors),
            "seconds": round(seconds, 2),
            "ask_seconds": round(ask_seconds, 2),
            # Over the asking phase only (Ray start-up and reading excluded).
            "calls_per_minute": round(60 * counters.get("calls", 0) / ask_seconds, 1)
            if ask_seconds
            else 0.0,
            "estimated_cost_usd": estimate_cost(
                run_usage.get("prompt_tokens", 0),
                run_usage.get("completion_tokens", 0),
                options.price_in,
                options.price_out,
            ),
            "workers": options.workers,
            "concurrency": options.concurrency,
            "rpm": options.rpm,
            "tpm": options.tpm,
            "seed": options.seed,
            "num_passages": options.num_passages,
        },
        "corpus": report.to_dict(),
    }
    _write_outputs(out, rows, errors, stats)
    return stats
