import json
import urllib.error
import urllib.request

from spacy_uniner.parsing import parse_teacher_reply
from spacy_uniner.teacher.prompt import TeacherPrompt


def post(server, body):
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def get(server, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
        return json.loads(response.read())


def test_replays_real_answers_in_fig1_format(teacher_server, shared_data):
    server = teacher_server()
    path = shared_data / "pile-ner" / "pile_ner_type_subset.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if json.loads(r["output"]))
    prompt = TeacherPrompt.for_variant("type")
    status, body, _ = post(server, {"model": "replay", "messages": prompt.messages(row["input"])})
    assert status == 200
    reply = body["choices"][0]["message"]["content"]
    assert reply.startswith('[("')
    pairs = parse_teacher_reply(reply).items
    for mention in json.loads(row["output"]):
        assert (mention, row["tagName"]) in pairs
    assert body["usage"]["total_tokens"] > 0
    # Unknown passages get an empty list.
    status, body, _ = post(
        server,
        {"model": "replay", "messages": prompt.messages("Nothing known here at all, really.")},
    )
    assert body["choices"][0]["message"]["content"] == "[]"
    # Definition variant: the type is a sentence.
    definition = TeacherPrompt.for_variant("definition").messages(row["input"])
    _, body, _ = post(server, {"model": "replay", "messages": definition})
    labels = {
        label for _, label in parse_teacher_reply(body["choices"][0]["message"]["content"]).items
    }
    assert labels and all(len(label.split()) > 3 for label in labels)
    assert get(server, "/stats")["requests"] == 3


def test_fault_injection_and_counter(teacher_server):
    server = teacher_server(fail_rate=1.0, fail_status=(503,), retry_after_ms=5)
    status, body, headers = post(
        server, {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 503 and "injected" in body["error"]["message"]
    assert headers["retry-after-ms"] == "5"
    stats = get(server, "/stats")
    assert stats["requests"] == 1 and stats["status_503"] == 1
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/stats/reset", data=b"", method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    assert get(server, "/stats") == {}
    assert get(server, "/v1/models")["data"][0]["id"] == "replay"


def test_garbage_replies_are_damaged(teacher_server, replay_teacher):
    server = teacher_server(garbage_rate=1.0, seed=3)
    text = next(p for p in replay_teacher.passages() if replay_teacher.pairs(p))
    messages = TeacherPrompt.for_variant("type").messages(text)
    replies = {
        post(server, {"model": "m", "messages": messages})[1]["choices"][0]["message"]["content"]
        for _ in range(12)
    }
    assert len(replies) > 2 and replay_teacher.reply(text) not in replies
    assert get(server, "/stats")["garbage"] == 12
