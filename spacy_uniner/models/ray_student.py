"""``spacy_uniner.RayStudent.v2``: the student runs in a pool of Ray actors.

The student is a nested block (``[components.universal_ner.model.student]``):
any registered student, ``spacy_uniner.HFStudent.v2`` by default.

The pipeline stays in the caller's process: the component cuts documents into
windows with the student's tokenizer here and sends the queries to the pool.
Each actor holds its own copy of the student (``num_gpus`` / ``num_cpus`` per
actor). A call's queries are cut into chunks of about ``chunk_size`` (never
splitting one passage's type queries, so each passage is prefilled once) and
dispatched with at most ``max_in_flight`` chunks per actor; replies come back in prompt
order. ``nlp.pipe`` keeps up to :attr:`RayStudent.lookahead` batches of
documents submitted (see ``UniversalNER.pipe``), so the pool stays busy while
the documents still come out in order.

An actor that dies is replaced and its chunks go to the front of the queue,
each at most ``max_retries`` times; an exception raised by the student itself
is the caller's error (the component's error handler gets it), not retried.
:meth:`RayStudent.close` (also on garbage collection) kills the actors.
"""

import inspect
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from ..prompts import prefix_key
from ..ray_session import start_ray
from ..registry import uniner_models
from .base import Generation, Student
from .hf import make_hf_student_v1, make_hf_student_v2

logger = logging.getLogger("spacy_uniner")


class _StudentActor:
    """Holds one copy of the student; built with ``ray.remote(...)`` at pool start."""

    def __init__(self, student: Student) -> None:
        self.student = student
        load = getattr(student, "load", None)
        if callable(load):
            load()

    def ready(self) -> int:
        return os.getpid()

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        return self.student.generate(prompts)


def chunk_bounds(prompts: Sequence[str], size: int) -> List[Tuple[int, int]]:
    """``(start, end)`` of chunks of at least ``size`` prompts (the last may be
    smaller) that never split one passage's type queries, so an actor answers
    them all from one prefill of the passage."""
    keys = [prefix_key(p, i) for i, p in enumerate(prompts)]
    bounds = []
    start = 0
    while start < len(prompts):
        end = min(start + size, len(prompts))
        while end < len(prompts) and keys[end] == keys[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


@dataclass
class _Chunk:
    call: "PendingGenerations"
    start: int
    prompts: List[str]
    attempts: int = 0


class PendingGenerations:
    """The replies of one :meth:`RayStudent.submit` call, filled as chunks come back."""

    def __init__(self, owner: "RayStudent", size: int) -> None:
        self._owner = owner
        self._replies: List[Optional[Generation]] = [None] * size
        self._missing = size
        self._error: Optional[BaseException] = None
        self.cancelled = False

    @property
    def done(self) -> bool:
        return self._missing == 0 or self._error is not None or self.cancelled

    def _fill(self, start: int, replies: List[Generation]) -> None:
        if self.done:
            return
        self._replies[start : start + len(replies)] = replies
        self._missing -= len(replies)

    def _fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error

    def result(self) -> List[Generation]:
        """Block until every reply is in; RETURNS them in prompt order."""
        while not self.done:
            self._owner._step()
        if self._error is not None:
            raise self._error
        if self.cancelled:
            raise RuntimeError("these generations were cancelled")
        return list(self._replies)  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Drop the chunks not sent yet; replies still running are ignored."""
        self.cancelled = True


@uniner_models("spacy_uniner.RayStudent.v2")
class RayStudent:
    """``spacy_uniner.RayStudent.v2``: the student in a pool of Ray actors (see the
    module docstring); the pipeline stays in this process.

    student (Optional[Student]): the student each actor runs, a nested block
        (``[components.universal_ner.model.student]``, e.g.
        ``spacy_uniner.HFStudent.v2`` with ``device = "cuda"`` to use the actor's
        ``num_gpus``); None: ``spacy_uniner.HFStudent.v2`` with its defaults. It
        is built here (an HFStudent loads no weights until asked) and a pickled
        copy goes to every actor.
    num_actors (int): actors in the pool.
    num_gpus (float): GPUs per actor (fractions share a GPU).
    num_cpus (float): CPUs per actor.
    chunk_size (int): prompts per request to an actor (more where a passage's
        type queries would otherwise be split).
    max_in_flight (int): requests queued on each actor at a time.
    max_retries (int): how often a chunk is sent again after its actor died.
    address (Optional[str]): the Ray cluster to join if Ray is not started yet
        (default: ``$RAY_ADDRESS``, else a local Ray).
    """

    def __init__(
        self,
        student: Optional[Student] = None,
        *,
        num_actors: int = 2,
        num_gpus: float = 0.0,
        num_cpus: float = 1.0,
        chunk_size: int = 16,
        max_in_flight: int = 2,
        max_retries: int = 2,
        address: Optional[str] = None,
    ) -> None:
        if num_actors < 1 or chunk_size < 1 or max_in_flight < 1 or max_retries < 0:
            raise ValueError(
                "num_actors, chunk_size and max_in_flight must be positive and max_retries "
                f">= 0, got {num_actors}, {chunk_size}, {max_in_flight} and {max_retries}"
            )
        if num_gpus < 0 or num_cpus < 0:
            raise ValueError(f"num_gpus and num_cpus must be >= 0, got {num_gpus} and {num_cpus}")
        # Its tokenizer cuts the windows here; copies run in the actors.
        self.student = make_hf_student_v2() if student is None else student
        self.num_actors = num_actors
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.chunk_size = chunk_size
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.address = address
        self.stats: Counter = Counter()
        self._actor_class: Any = None
        self._actors: List[Any] = []
        self._running: Dict[Any, Tuple[int, Any, _Chunk]] = {}  # ref → (slot, actor, chunk)
        self._queue: Deque[_Chunk] = deque()

    def __repr__(self) -> str:
        return (
            f"RayStudent({self.student!r}, num_actors={self.num_actors}, "
            f"num_gpus={self.num_gpus}, num_cpus={self.num_cpus})"
        )

    @property
    def lookahead(self) -> int:
        """How many submitted calls a caller may keep waiting before collecting the oldest."""
        return self.num_actors * self.max_in_flight

    @property
    def actors(self) -> List[Any]:
        """The live actor handles (for inspection and tests)."""
        return list(self._actors)

    @property
    def settings(self) -> Dict[str, Any]:  # what the student records beside its weights
        return getattr(self.student, "settings", None) or {}

    def token_offsets(self, text: str) -> List[Tuple[int, int]]:
        return self.student.token_offsets(text)

    # -------------------------------------------------------------- the pool

    def load(self) -> "RayStudent":
        """Start the actors (each loads the student) and wait until they are ready."""
        import ray

        if self._actors:
            return self
        start_ray(self.address)
        self._actor_class = ray.remote(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0
        )(_StudentActor)
        student_ref = ray.put(self.student)
        self._student_ref = student_ref
        self._actors = [self._actor_class.remote(student_ref) for _ in range(self.num_actors)]
        try:
            pids = ray.get([actor.ready.remote() for actor in self._actors])
        except Exception as err:
            self.close()
            raise RuntimeError(f"The student could not start in a Ray actor: {err}") from err
        logger.info("RayStudent: %d actors ready (pids %s)", len(pids), pids)
        return self

    def _replace(self, slot: int, dead: Any) -> None:
        if self._actors[slot] is not dead:  # already replaced for an earlier failed chunk
            return
        self._actors[slot] = self._actor_class.remote(self._student_ref)
        self.stats["actors_replaced"] += 1
        logger.warning("RayStudent: actor %d died; replaced it", slot)

    def close(self, wait: float = 30.0) -> None:
        """Kill the actors and wait up to ``wait`` seconds until they are gone (their
        resources free again); a later call starts a fresh pool."""
        actors, self._actors = self._actors, []
        for chunk in list(self._queue) + [c for _, _, c in self._running.values()]:
            chunk.call._fail(RuntimeError("the RayStudent was closed"))
        self._queue.clear()
        self._running.clear()
        if not actors:
            return
        try:
            import ray

            if not ray.is_initialized():  # Ray already shut down with the interpreter
                return
            for actor in actors:
                ray.kill(actor)
            # ray.kill is asynchronous: an actor answers until its process is gone.
            deadline = time.monotonic() + wait
            for actor in actors:
                while time.monotonic() < deadline:
                    try:
                        ray.get(actor.ready.remote(), timeout=max(deadline - time.monotonic(), 0))
                    except ray.exceptions.RayActorError:
                        break
                    except ray.exceptions.GetTimeoutError:
                        break
                    time.sleep(0.1)
        except Exception as err:  # closing must not raise (also called from __del__)
            logger.warning("RayStudent: closing the pool: %s", err)

    def __del__(self) -> None:
        try:
            self.close(wait=0.0)
        except Exception:
            pass

    def __getstate__(self) -> Dict[str, Any]:
        # A copy (e.g. a pipeline sent to another process) starts its own pool.
        state = dict(self.__dict__)
        state.update(_actor_class=None, _actors=[], _running={}, _queue=deque(), stats=Counter())
        state.pop("_student_ref", None)
        return state

    # -------------------------------------------------------------- calls

    def submit(self, prompts: Sequence[str]) -> PendingGenerations:
        """Queue ``prompts``; RETURNS a handle whose ``result()`` gives the replies in order."""
        self.load()
        call = PendingGenerations(self, len(prompts))
        for start, end in chunk_bounds(prompts, self.chunk_size):
            self._queue.append(_Chunk(call, start, list(prompts[start:end])))
        self.stats["calls"] += 1
        self.stats["prompts"] += len(prompts)
        self._dispatch()
        return call

    def generate(self, prompts: Sequence[str]) -> List[Generation]:
        return self.submit(prompts).result() if prompts else []

    def _dispatch(self) -> None:
        load = Counter(slot for slot, _, _ in self._running.values())
        while self._queue:
            slot = min(range(len(self._actors)), key=lambda s: load[s])
            if load[slot] >= self.max_in_flight:
                return
            chunk = self._queue.popleft()
            if chunk.call.done:  # cancelled or failed: nothing to ask
                continue
            actor = self._actors[slot]
            self._running[actor.generate.remote(chunk.prompts)] = (slot, actor, chunk)
            load[slot] += 1
            self.stats["chunks"] += 1

    def _step(self) -> None:
        """Wait for one chunk, file its replies (or retry or fail it), dispatch more."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        self._dispatch()
        if not self._running:
            raise RuntimeError("RayStudent: replies missing but nothing is running")
        ready, _ = ray.wait(list(self._running), num_returns=1)
        for ref in ready:
            slot, actor, chunk = self._running.pop(ref)
            try:
                replies = ray.get(ref)
            except RayActorError as err:
                self._replace(slot, actor)
                chunk.attempts += 1
                if chunk.attempts > self.max_retries:
                    chunk.call._fail(
                        RuntimeError(
                            f"RayStudent: a chunk of {len(chunk.prompts)} prompts lost its actor "
                            f"{chunk.attempts} times; giving up: {err}"
                        )
                    )
                else:
                    self.stats["retries"] += 1
                    self._queue.appendleft(chunk)
                continue
            except RayTaskError as err:  # the student raised: the caller's error
                chunk.call._fail(getattr(err, "cause", None) or err.as_instanceof_cause())
                continue
            if len(replies) != len(chunk.prompts):
                chunk.call._fail(
                    RuntimeError(
                        f"The student returned {len(replies)} replies for {len(chunk.prompts)} "
                        "prompts"
                    )
                )
                continue
            chunk.call._fill(chunk.start, replies)
        self._dispatch()

    def to_disk(self, path: Path) -> None:
        """Record the pool settings and whatever the student records about its weights."""
        import json

        Path(path).mkdir(parents=True, exist_ok=True)
        names = ("num_actors", "num_gpus", "num_cpus", "chunk_size", "max_in_flight")
        settings = {**{name: getattr(self, name) for name in names}, "student": repr(self.student)}
        (Path(path) / "ray_student.json").write_text(json.dumps(settings, indent=2))
        if hasattr(self.student, "to_disk"):
            self.student.to_disk(path)


@uniner_models("spacy_uniner.RayStudent.v1")
def make_ray_student_v1(
    name: str = "default",
    device: str = "cpu",
    dtype: str = "float32",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    threads: Optional[int] = None,
    allow_download: bool = False,
    adapter: Optional[str] = None,
    prefix_sharing: bool = True,
    empty_bias: Optional[float] = None,
    student: Optional[Student] = None,
    num_actors: int = 2,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
    chunk_size: int = 16,
    max_in_flight: int = 2,
    max_retries: int = 2,
    address: Optional[str] = None,
    prepack: Optional[bool] = None,
    draft_tokens: int = 1,
    retain_memory: Optional[bool] = None,
    lean_forward: bool = True,
    common_prefix: bool = True,
    prefill_attention: str = "auto",
) -> RayStudent:
    """:class:`RayStudent` (``spacy_uniner.RayStudent.v2``) with the HFStudent.v1
    settings written out flat (kept so that older configs load; new configs nest a
    student block).

    name, device, dtype, max_new_tokens, batch_size, threads, allow_download,
        adapter, prefix_sharing, empty_bias: ``spacy_uniner.HFStudent.v1``'s
        settings for each actor. prepack, draft_tokens, retain_memory,
        lean_forward, common_prefix, prefill_attention: HFStudent.v1's retired
        speed settings (ignored, as there).
    student (Optional[Student]): any other student block instead; then the HF
        settings must stay at their defaults.
    """
    settings = dict(locals())
    hf_params = inspect.signature(make_hf_student_v1).parameters
    hf = {k: settings[k] for k in hf_params}
    if student is None:
        student = make_hf_student_v1(**hf)
    else:
        changed = sorted(k for k, v in hf.items() if v != hf_params[k].default)
        if changed:
            raise ValueError(
                f"RayStudent: give either a student block or HF settings, not both "
                f"(set: {', '.join(changed)})"
            )
    return RayStudent(
        student,
        num_actors=num_actors,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        chunk_size=chunk_size,
        max_in_flight=max_in_flight,
        max_retries=max_retries,
        address=address,
    )
