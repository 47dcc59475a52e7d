"""spacy_uniner.OpenAIStudent.v1 against a real completions server on 127.0.0.1."""

import json
import logging
import math

import pytest
import spacy

from spacy_uniner import prompts
from spacy_uniner.models.base import finish_reply
from spacy_uniner.models.openai_student import OpenAIStudent, StudentServerError
from spacy_uniner.openai_server import OpenAIServer
from spacy_uniner.testing import ScriptedStudent

SECRET = "sk-uniner-student-5c1e9a-DO-NOT-LEAK"
KEY_ENV = "UNINER_TEST_STUDENT_KEY"
TEXT = "Ada Lovelace met Charles Babbage in London."
REPLIES = {"person": '["Ada Lovelace", "Charles Babbage"]', "city": '["London"]'}
SCORES = {"person": 0.8, "city": 0.5}


def refusal(reply: str) -> str:
    return "I'm sorry, but I cannot help with that request."


@pytest.fixture
def student_server():
    """Factory: ``student_server(ScriptedStudent(...), fail_rate=0.5, ...)`` on 127.0.0.1."""
    servers = []

    def start(student=None, **kwargs):
        student = student or ScriptedStudent(REPLIES, scores=SCORES)
        server = OpenAIServer(student=student, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def model_block(server, **kwargs):
    return {
        "@uniner_models": "spacy_uniner.OpenAIStudent.v1",
        "model": "uniner-test",
        "base_url": server.base_url,
        "tokenizer": "words",
        **kwargs,
    }


def make_nlp(server, labels=("person", "city"), **kwargs):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "universal_ner",
        config={
            "labels": list(labels),
            "store_replies": True,
            "model": model_block(server, **kwargs),
        },
    )
    return nlp


def query(label, passage=TEXT):
    return prompts.render_query(passage, label)


def test_spans_and_scores_through_the_component_match_the_script(student_server):
    server = student_server()
    nlp = make_nlp(server, batch_size=4)
    texts = [TEXT, "Nothing here.", TEXT.replace("London", "Paris")]
    docs = list(nlp.pipe(texts, batch_size=3))
    got = [[(s.text, s.label_) for s in d.spans["universal_ner"]] for d in docs]
    assert got[0] == [("Ada Lovelace", "person"), ("Charles Babbage", "person"), ("London", "city")]
    assert got[1] == []
    assert got[2] == [("Ada Lovelace", "person"), ("Charles Babbage", "person")]
    # the scripted probabilities come back as span scores (logprobs over HTTP)
    assert list(docs[0].spans["universal_ner"].attrs["scores"]) == pytest.approx([0.8, 0.8, 0.5])
    assert [e.text for e in docs[0].ents] == ["Ada Lovelace", "Charles Babbage", "London"]
    replies = docs[0].user_data["universal_ner"]["replies"]
    assert [r["reply"] for r in replies] == [REPLIES["person"], REPLIES["city"]]
    # 6 prompts, 4 per request: two requests, each a list of prompts
    assert server.stats()["prompts"] == 6
    assert server.stats()["requests"] == server.stats()["list_requests"] == 2
    assert nlp.get_pipe("universal_ner").stats["parse_failures"] == 0


def test_order_is_kept_under_concurrency(student_server):
    labels = [f"type{i}" for i in range(24)]
    scripted = ScriptedStudent({label: json.dumps([label]) for label in labels})
    server = student_server(scripted, delay_ms=20, jitter_ms=60, seed=3)
    student = OpenAIStudent("uniner-test", server.base_url, batch_size=2, concurrency=4)
    gens = student.generate([query(label) for label in labels])
    assert [json.loads(g.text) for g in gens] == [[label] for label in labels]
    stats = server.stats()
    assert stats["requests"] == 12
    assert stats["max_in_flight"] == 4  # concurrent, and never more than the bound


def test_pipe_keeps_the_next_batch_in_flight(student_server):
    server = student_server(delay_ms=100)
    nlp = make_nlp(server, batch_size=1, concurrency=8)
    texts = [TEXT.replace("London", city) for city in ("Paris", "Rome", "Oslo", "Bern")]
    docs = list(nlp.pipe(texts, batch_size=1))
    # documents in order, each with its own answers
    assert [d.text for d in docs] == texts
    for doc in docs:
        assert [s.text for s in doc.spans["universal_ner"]] == ["Ada Lovelace", "Charles Babbage"]
    # 2 requests per batch of one document; the next batch's went out while one was read
    assert server.stats()["requests"] == 8
    assert server.stats()["max_in_flight"] == 4
    student = nlp.get_pipe("universal_ner").model
    student.close()
    assert [g.text for g in student.generate([query("city")])] == [REPLIES["city"]]
    student.close()


def test_falls_back_to_one_prompt_per_request(student_server, caplog):
    server = student_server(accept_lists=False)
    student = OpenAIStudent("uniner-test", server.base_url, batch_size=3, concurrency=1)
    ps = [query("person"), query("city"), query("person")]
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        first = student.generate(ps)
        second = student.generate(ps)
    assert (
        [g.text for g in first]
        == [g.text for g in second]
        == [
            REPLIES["person"],
            REPLIES["city"],
            REPLIES["person"],
        ]
    )
    # one refused list, then single prompts only
    assert server.stats()["status_400"] == 1
    assert server.stats()["requests"] == 1 + 6 and "list_requests" not in server.stats()
    warnings = [r.getMessage() for r in caplog.records if "list of prompts" in r.getMessage()]
    assert len(warnings) == 1 and f"{server.base_url}/completions" in warnings[0]


def test_retries_on_429_and_5xx(student_server):
    server = student_server(fail_rate=0.5, fail_status=(429, 500, 503), retry_after_ms=1, seed=1)
    student = OpenAIStudent(
        "uniner-test", server.base_url, batch_size=1, concurrency=4, max_attempts=10
    )
    gens = student.generate([query("person"), query("city")] * 5)
    assert [g.text for g in gens] == [REPLIES["person"], REPLIES["city"]] * 5
    stats = server.stats()
    failed = sum(stats.get(f"status_{s}", 0) for s in (429, 500, 503))
    assert failed > 0 and stats["status_200"] == 10 and stats["requests"] == 10 + failed


def test_persistent_errors_name_the_endpoint_after_retries(student_server):
    server = student_server(fail_rate=1.0, fail_status=(503,), retry_after_ms=1)
    student = OpenAIStudent("uniner-test", server.base_url, max_attempts=3)
    with pytest.raises(StudentServerError) as err:
        student.generate([query("person")])
    assert f"{server.base_url}/completions answered HTTP 503 after 3 attempts" in str(err.value)
    assert server.stats()["requests"] == 3


def test_a_rejected_prompt_is_a_clear_error(student_server):
    server = student_server()
    student = OpenAIStudent("uniner-test", server.base_url, batch_size=2)
    # a list is refused, then each prompt alone: the server's reason comes back
    with pytest.raises(StudentServerError, match=r"answered HTTP 400: .*Not a UniNER query"):
        student.generate(["not a UniNER prompt", "nor this"])
    assert server.stats()["status_400"] == 2
    assert [g.text for g in student.generate([query("city"), query("city")])] == [
        REPLIES["city"]
    ] * 2
    assert server.stats()["list_requests"] == 1  # lists were not given up on


def test_timeout_is_a_clear_error_naming_the_endpoint(student_server):
    server = student_server(delay_ms=1500)
    nlp = make_nlp(server, timeout=0.2, max_attempts=2)
    with pytest.raises(StudentServerError) as err:
        nlp(TEXT)
    assert str(err.value) == (
        f"{server.base_url}/completions did not answer within 0.2 s (2 attempts)"
    )
    assert server.stats()["requests"] == 2


def test_unreachable_server_is_a_clear_error():
    student = OpenAIStudent("uniner-test", "http://127.0.0.1:9/v1", max_attempts=1)
    with pytest.raises(StudentServerError, match=r"Could not connect to http://127.0.0.1:9/v1"):
        student.generate([query("person")])


def test_garbage_replies_are_counted_as_unparseable(student_server):
    server = student_server(garbage_rate=0.5, garbage=(refusal,), seed=4)
    nlp = make_nlp(server, batch_size=1)
    docs = list(nlp.pipe([TEXT] * 6))
    pipe = nlp.get_pipe("universal_ner")
    garbage = server.stats()["garbage"]
    assert 0 < garbage < 12
    assert pipe.stats["queries"] == 12 and pipe.stats["parse_failures"] == garbage
    found = sum(len(d.spans["universal_ner"]) for d in docs)
    assert 0 < found < 6 * 3


def test_broken_bodies_are_counted_as_unparseable(student_server, caplog):
    server = student_server(broken_rate=1.0)
    nlp = make_nlp(server, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        doc = nlp(TEXT)
    assert len(doc.spans["universal_ner"]) == 0
    assert nlp.get_pipe("universal_ner").stats["parse_failures"] == 2
    assert "reply without completions" in caplog.text


def test_key_from_the_environment_is_sent_never_logged_or_written(
    student_server, monkeypatch, caplog, tmp_path
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = student_server(api_key=SECRET)
    caplog.set_level(logging.DEBUG)  # every logger: ours, openai's, its HTTP client's
    nlp = make_nlp(server, api_key_env=KEY_ENV, timeout=0.5, max_attempts=2)
    doc = nlp(TEXT)
    assert len(doc.spans["universal_ner"]) == 3
    assert server.stats()["status_200"] == 1 and "status_401" not in server.stats()
    nlp.to_disk(tmp_path / "pipeline")
    # a retried failure logs too
    slow = student_server(api_key=SECRET, fail_rate=1.0, fail_status=(500,), retry_after_ms=1)
    with pytest.raises(StudentServerError):
        make_nlp(slow, api_key_env=KEY_ENV, max_attempts=2)(TEXT)
    assert "Retrying request" in caplog.text  # the client's debug logs were captured
    assert SECRET not in caplog.text
    assert SECRET not in repr(nlp.get_pipe("universal_ner").model)
    assert SECRET not in nlp.config.to_str()
    written = [p for p in (tmp_path / "pipeline").rglob("*") if p.is_file()]
    assert written and all(SECRET.encode() not in p.read_bytes() for p in written)
    settings = json.loads(
        (tmp_path / "pipeline" / "universal_ner" / "model" / "student.json").read_text()
    )
    assert settings["api_key_env"] == KEY_ENV and settings["base_url"] == server.base_url
    # the saved pipeline finds the server again; without the key it is refused
    assert len(spacy.load(tmp_path / "pipeline")(TEXT).spans["universal_ner"]) == 3
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(StudentServerError, match="answered HTTP 401: "):
        spacy.load(tmp_path / "pipeline")(TEXT)


def test_real_logprobs_from_a_tiny_hf_model(student_server, tiny_model_dir):
    from spacy_uniner.models.hf import HFStudent

    hf = HFStudent(str(tiny_model_dir), max_new_tokens=6, threads=1)
    server = student_server(hf)
    # the served model's name is a local HF folder: its tokenizer measures the windows
    student = OpenAIStudent(str(tiny_model_dir), server.base_url, batch_size=2)
    text = "Zoë lives in Zürich 🇨🇭 today."
    assert student.token_offsets(text) == hf.token_offsets(text)
    ps = [query("person", text), query("location", text), query("date", text)]
    remote, local = student.generate(ps), hf.generate(ps)
    assert [g.text for g in remote] == [g.text for g in local]
    assert any(g.token_logprobs for g in local)
    for r, h in zip(remote, local):
        assert r.token_offsets == h.token_offsets
        assert r.token_logprobs == pytest.approx(h.token_logprobs, abs=1e-6)
        assert r.confidence(0, len(r.text)) == pytest.approx(h.confidence(0, len(h.text)))


def test_finish_reply_cuts_at_the_stop_marker_and_moves_offsets():
    gen = finish_reply(
        ' ["a"]</s>tail', [(0, 2), (2, 5), (5, 6), (6, 10), (10, 14)], [-1, -2, -3, -4, -5]
    )
    assert gen.text == '["a"]'
    assert gen.token_offsets == ((0, 1), (1, 4), (4, 5)) and gen.token_logprobs == (-1, -2, -3)
    assert gen.confidence(1, 4) == pytest.approx(math.exp(-2))
    # a token without a log-probability and one past the text are left out
    gen = finish_reply('["b"]', [(0, 2), (2, 5), (5, 5)], [None, -0.5, -0.1])
    assert gen.token_offsets == ((2, 5),) and gen.token_logprobs == (-0.5,)


def test_tokenizer_falls_back_to_words_with_a_warning(caplog):
    student = OpenAIStudent("Universal-NER/not-in-any-cache", "http://127.0.0.1:9/v1")
    with caplog.at_level(logging.WARNING, logger="spacy_uniner"):
        assert student.token_offsets("Ada, hi") == [(0, 3), (3, 4), (5, 7)]
    assert "windows are measured in words" in caplog.text
    named = OpenAIStudent("x", "http://127.0.0.1:9/v1", tokenizer="/no/such/tokenizer")
    with pytest.raises(OSError, match="Could not load the tokenizer '/no/such/tokenizer'"):
        named.token_offsets("Ada")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "base_url must be an http"),
        ({"model": " "}, "served model's name"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"concurrency": 0}, "concurrency must be"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_settings_name_the_input(kwargs, message):
    settings = {"model": "uniner-test", "base_url": "http://127.0.0.1:8000/v1", **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenAIStudent(**settings)


def test_a_key_given_as_api_key_env_is_refused_without_echoing_it():
    with pytest.raises(ValueError) as err:
        OpenAIStudent("uniner-test", api_key_env=SECRET)
    assert "name of an environment variable" in str(err.value) and SECRET not in str(err.value)
