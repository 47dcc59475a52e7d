"""spacy_uniner.RayStudent.v1 on a local Ray with 2 CPU actors: the same spans and
replies as in-process, in order, through a killed actor; student errors reach the
error handler; clean shutdown."""

import time

import pytest
import spacy

from spacy_uniner import prompts
from spacy_uniner.models.hf import HFStudent
from spacy_uniner.models.ray_student import RayStudent, make_ray_student_v1
from spacy_uniner.testing import ScriptedStudent

from .conftest import (
    EXIT_MARKER,
    FAIL_MARKER,
    LABELS,
    document_text,
    exit_once_block,
    scripted_block,
)


def spans(doc):
    group = doc.spans["universal_ner"]
    return [(s.start_char, s.end_char, s.label_) for s in group], list(group.attrs["scores"])


def test_same_spans_as_in_process_through_a_killed_actor(ray_cluster, exit_flag):
    import ray

    texts = [document_text(i, EXIT_MARKER if i == 13 else "") for i in range(40)]
    texts[5] = "Nobody here."
    reference = spacy.blank("en")
    reference.add_pipe("universal_ner", config={"labels": LABELS, "model": scripted_block()})
    expected = [spans(doc) for doc in reference.pipe(texts, batch_size=4)]
    assert sum(len(s) for s, _ in expected) == 2 * 39  # not trivially empty

    exit_flag.unlink(missing_ok=True)
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "universal_ner",
        config={
            "labels": LABELS,
            "model": {
                "@uniner_models": "spacy_uniner.RayStudent.v2",
                "num_actors": 2,
                "chunk_size": 4,
                "student": exit_once_block(exit_flag),
            },
        },
    )
    student = nlp.get_pipe("universal_ner").model
    assert isinstance(student, RayStudent) and student.lookahead == 4
    try:
        docs = list(nlp.pipe(texts, batch_size=4))
        assert [doc.text for doc in docs] == texts  # in order
        assert [spans(doc) for doc in docs] == expected
        assert exit_flag.exists()  # an actor ended on document 13 ...
        assert student.stats["actors_replaced"] == 1 and student.stats["retries"] >= 1
        assert student.stats["prompts"] == 2 * 40 and student.stats["calls"] == 10

        # ... and one killed from outside between calls is replaced too
        killed = student.actors[0]
        ray.kill(killed)
        # ray.kill is asynchronous: a quick chunk could still be answered by the dying actor
        deadline = time.monotonic() + 30
        with pytest.raises(ray.exceptions.RayActorError):
            while time.monotonic() < deadline:
                ray.get(killed.ready.remote(), timeout=30)
                time.sleep(0.05)
        again = [spans(doc) for doc in nlp.pipe(texts[:8], batch_size=4)]
        assert again == expected[:8] and student.stats["actors_replaced"] == 2

        # labels per call reach the actors
        cities = list(nlp.pipe(texts[:2], component_cfg={"universal_ner": {"labels": ["city"]}}))
        assert {label for doc in cities for _, _, label in spans(doc)[0]} == {"city"}
    finally:
        actors = student.actors
        student.close()
    assert student.actors == []
    for actor in actors:  # shut down: the actors are gone
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.ready.remote(), timeout=60)


def test_student_errors_go_to_the_error_handler_in_order(ray_cluster):
    nlp = spacy.blank("en")
    model = {
        "@uniner_models": "spacy_uniner.RayStudent.v2",
        "num_actors": 2,
        "chunk_size": 2,
        "student": scripted_block(),
    }  # raises on FAIL_MARKER
    nlp.add_pipe("universal_ner", config={"labels": LABELS, "model": model})
    student = nlp.get_pipe("universal_ner").model
    failed = []
    nlp.set_error_handler(
        lambda name, proc, docs, err: failed.append(([d.text for d in docs], err))
    )
    texts = [document_text(i, FAIL_MARKER if i == 5 else "") for i in range(12)]
    try:
        docs = list(nlp.pipe(texts, batch_size=3))
    finally:
        student.close()
    # the batch holding document 5 went to the handler with the student's own error;
    # the others came out, in order, annotated
    assert [doc.text for doc in docs] == texts[:3] + texts[6:]
    assert len(failed) == 1 and failed[0][0] == texts[3:6]
    assert isinstance(failed[0][1], RuntimeError) and FAIL_MARKER in str(failed[0][1])
    assert all(spans(doc)[0] for doc in docs)
    assert student.stats["actors_replaced"] == 0  # a student error is no actor death


def test_tiny_model_gives_identical_generations(ray_cluster, tiny_model_dir):
    queries = [
        prompts.render_query(text, label)
        for text in ("Ada Lovelace wrote to Babbage.", "Paris is in France.", "Hi.")
        for label in ("person", "city")
    ]
    settings = dict(max_new_tokens=6, batch_size=8, threads=1)
    local = HFStudent(str(tiny_model_dir), **settings).generate(queries)
    # one chunk: the same batches as in-process, so bit-identical log-probabilities
    student = RayStudent(
        HFStudent(str(tiny_model_dir), **settings), num_actors=2, chunk_size=len(queries)
    )
    try:
        remote = student.generate(queries)
        student.chunk_size = 2  # spread over both actors: other padding, same greedy text
        spread = student.generate(queries)
    finally:
        student.close()
    assert remote == local
    assert any(g.token_logprobs for g in local)
    assert [g.text for g in spread] == [g.text for g in local]
    for a, b in zip(spread, local):
        assert a.token_offsets == b.token_offsets
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_settings_are_checked(tiny_model_dir):
    with pytest.raises(ValueError, match="either a student block or HF settings.*name"):
        make_ray_student_v1(name="other", student=ScriptedStudent({}))
    with pytest.raises(ValueError, match="num_actors"):
        make_ray_student_v1(student=ScriptedStudent({}), num_actors=0)
    student = make_ray_student_v1(name=str(tiny_model_dir), max_new_tokens=5)
    assert isinstance(student.student, HFStudent) and student.student.max_new_tokens == 5
    assert student.token_offsets("Ada met Bob")  # the tokenizer runs here, no actors
    assert student.actors == []
    # v2: the student is a nested block, any registered student; default HFStudent.v2
    nlp = spacy.blank("en")
    block = {"@uniner_models": "spacy_uniner.HFStudent.v1", "name": str(tiny_model_dir),
             "max_new_tokens": 7}
    nlp.add_pipe("universal_ner", config={
        "labels": LABELS,
        "model": {"@uniner_models": "spacy_uniner.RayStudent.v2", "num_actors": 3,
                  "student": block},
    })
    pooled = nlp.get_pipe("universal_ner").model
    assert isinstance(pooled.student, HFStudent) and pooled.student.max_new_tokens == 7
    assert pooled.num_actors == 3 and pooled.actors == []
    assert "[components.universal_ner.model.student]" in nlp.config.to_str()
    default = RayStudent().student
    assert default.name == "default" and default.grounded is True
