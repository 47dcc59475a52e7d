import math

import pytest
import spacy

from spacy_uniner import prompts
from spacy_uniner.models.hf import HFStudent, make_hf_student_v1
from spacy_uniner.parsing import answer_complete


@pytest.fixture(scope="module")
def student(tiny_model_dir):
    return HFStudent(str(tiny_model_dir), max_new_tokens=6, batch_size=3, threads=1).load()


def test_answer_complete():
    assert answer_complete('["a", "b"]')
    assert answer_complete('text ["a"] more')
    assert answer_complete("anything</s>")
    assert not answer_complete('["a", "b')
    assert not answer_complete('["a]", ')
    assert not answer_complete("prose without a list")
    # a greedy loop ends at the first repeated item
    assert answer_complete('["New York", "Boston", "New York",')
    assert not answer_complete('["New York", "New York City",')


def test_generate_returns_one_reply_per_prompt_in_order(student):
    texts = ["Ada Lovelace met Babbage.", "A much longer passage " * 20, "Short."]
    ps = [prompts.render_query(t, "person") for t in texts]
    batched = student.generate(ps)
    single = [student.generate([p])[0] for p in ps]
    assert len(batched) == 3
    # left padding: a batch gives the same greedy answers as one prompt at a time
    assert [g.text for g in batched] == [g.text for g in single]
    for gen in batched:
        assert len(gen.token_logprobs) == len(gen.token_offsets) <= 6
        assert all(lp <= 0 for lp in gen.token_logprobs)
        assert 0 < gen.confidence(0, len(gen.text)) <= 1


def test_generation_token_offsets_cover_the_reply(student):
    gen = student.generate([prompts.render_query("Paris is in France.", "location")])[0]
    if gen.token_offsets:
        assert gen.token_offsets[-1][1] <= len(gen.text) + 1
        starts = [s for s, _ in gen.token_offsets]
        assert starts == sorted(starts)


def test_token_offsets_are_character_offsets(student):
    text = "Zoë lives in Zürich 🇨🇭 today."
    offsets = student.token_offsets(text)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(0 <= s <= e <= len(text) for s, e in offsets)


def test_stops_at_eos_or_marker(tiny_model_dir):
    s = HFStudent(str(tiny_model_dir), max_new_tokens=4)
    gen = s._to_generation(
        [s.tokenizer.convert_tokens_to_ids("a")] + s.tokenizer.encode("</s> tail") ,
        [-0.1] * 6,
    )
    assert gen.text == "a"
    assert len(gen.token_logprobs) == 1 and math.isclose(gen.confidence(0, 1), math.exp(-0.1))


def test_bfloat16_and_bad_settings(tiny_model_dir):
    s = make_hf_student_v1(name=str(tiny_model_dir), dtype="bfloat16", max_new_tokens=3)
    assert len(s.generate([prompts.render_query("Paris.", "city")])) == 1
    with pytest.raises(ValueError, match="dtype"):
        HFStudent(str(tiny_model_dir), dtype="fp8")
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFStudent(str(tiny_model_dir), max_new_tokens=0)


def test_bad_model_sources_are_clear_errors(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    import spacy
    import torch

    def check(name, **settings):
        HFStudent(name, **settings).check_source()

    with pytest.raises(FileNotFoundError, match="Student model folder .*nope.* does not exist"):
        check(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="Student model folder .*nope.* does not exist"):
        HFStudent(str(tmp_path / "nope")).load()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="'someone/unknown-model' is neither a local folder "
                       "nor in the local Hugging Face cache.*downloads are off"):
        check("someone/unknown-model")
    check("someone/unknown-model", allow_download=True)  # may be fetched: no error yet
    with pytest.raises(FileNotFoundError, match="adapter folder .*missing"):
        check(str(tiny_model_dir), adapter=str(tmp_path / "missing"))
    # the component checks at construction, naming the folder
    nlp = spacy.blank("en")
    with pytest.raises(FileNotFoundError, match="nope"):
        nlp.add_pipe("universal_ner", config={"labels": ["x"], "model": {
            "@uniner_models": "spacy_uniner.HFStudent.v2", "name": str(tmp_path / "nope")}})
    with pytest.raises(ValueError, match="threads must be positive"):
        HFStudent(str(tiny_model_dir), threads=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda:1': CUDA is not available"):
        HFStudent(str(tiny_model_dir), device="cuda:1")
    # truncated weights: the error names the file
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=r"model\.safetensors is unreadable \(truncated"):
        HFStudent(str(broken)).load()


def test_students_with_the_same_weights_share_one_model(tiny_model_dir):
    a = HFStudent(str(tiny_model_dir), threads=1).load()
    b = HFStudent(str(tiny_model_dir), max_new_tokens=5, threads=1).load()
    c = HFStudent(str(tiny_model_dir), dtype="bfloat16", threads=1).load()
    assert a._model is b._model and c._model is not a._model
    assert b._workspace is not a._workspace


def test_component_end_to_end_with_tiny_model(tiny_model_config):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "universal_ner",
        config={"labels": ["person", "location"], "model": tiny_model_config,
                "store_replies": True, "max_passage_tokens": 16, "window_overlap": 4},
    )
    text = "Ada Lovelace met Charles Babbage in London in 1833. " * 3
    docs = list(nlp.pipe([text, "Paris.", ""], batch_size=2))
    pipe = nlp.get_pipe("universal_ner")
    stats = pipe.stats
    windows = stats["windows"]
    assert windows > 3
    assert stats["queries"] == 2 * windows
    # every query's raw reply is kept and every failure counted
    replies = docs[0].user_data["universal_ner"]["replies"] + docs[1].user_data["universal_ner"]["replies"]
    assert len(replies) == stats["queries"]
    assert sum(r["error"] is not None for r in replies) == stats["parse_failures"]
    for doc in docs:
        group = doc.spans["universal_ner"]
        assert len(group.attrs["scores"]) == len(group)


def test_prefix_sharing_gives_the_per_type_answers(tiny_model_dir, monkeypatch):
    texts = [
        "Ada Lovelace met Charles Babbage in London in 1833.",
        "The Transformer architecture was introduced at NeurIPS by Google researchers. " * 3,
        "Short.",
    ]
    labels = ["person", "location", "date", "organisation", "conference", "algorithm", "x"]
    ps = [prompts.render_query(t, label) for t in texts for label in labels]
    ps.append("a prompt that is not a UniNER query")
    shared = HFStudent(str(tiny_model_dir), max_new_tokens=8, batch_size=4, threads=1)
    plain = HFStudent(
        str(tiny_model_dir), max_new_tokens=8, batch_size=4, threads=1, prefix_sharing=False
    )
    from spacy_uniner.models.decoding import SharedDecoder

    packed = []  # (rows, tokens) of each admission forward (decode steps feed one token)
    original = SharedDecoder._forward

    def forward(self, ids, mask, positions, cache, keep):
        if ids.shape[1] > 1:
            packed.append(tuple(ids.shape))
        return original(self, ids, mask, positions, cache, keep)

    monkeypatch.setattr(SharedDecoder, "_forward", forward)
    a, b = shared.generate(ps), plain.generate(ps)
    # every passage (and the free-text prompt) is one packed row, admitted once
    # (batch_size 4 < 7 types: the batch widens to a whole passage)
    assert sum(rows for rows, _ in packed) == len(texts) + 1
    ids = [shared.tokenizer(p)["input_ids"] for p in ps]
    assert sum(r * t for r, t in packed) < sum(map(len, ids)) / 2
    assert [g.text for g in a] == [g.text for g in b]
    for x, y in zip(a, b):
        assert x.token_offsets == y.token_offsets
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-3)


def test_prefix_groups():
    from spacy_uniner.models.decoding import common_prefix_len
    from spacy_uniner.prompts import group_by_prefix

    ps = [prompts.render_query("A.", "x"), "free text", prompts.render_query("A.", "y"),
          prompts.render_query("B.", "x")]
    assert sorted(group_by_prefix(ps).values()) == [[0, 2], [1], [3]]
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5], [6]]) == 0


def test_empty_bias_moves_the_first_answer_token(tiny_model_dir, tmp_path):
    import json

    from spacy_uniner.weights import adapter_settings

    ps = [prompts.render_query(t, label) for t in ["Ada met Babbage.", "Paris, 1833."]
          for label in ["person", "date", "x"]]
    forced_empty = HFStudent(str(tiny_model_dir), max_new_tokens=4, threads=1, empty_bias=-1e4)
    assert all(g.text.startswith("[]") for g in forced_empty.generate(ps))
    assert " []" in [forced_empty.tokenizer.decode([i]) for i in forced_empty.empty_list_ids]
    never_empty = HFStudent(str(tiny_model_dir), max_new_tokens=4, threads=1, empty_bias=1e4)
    for sharing in (True, False):
        never_empty.prefix_sharing = sharing
        assert not any(g.text.startswith("[]") for g in never_empty.generate(ps))
    # the value recorded beside an adapter is the default; an explicit one wins
    (tmp_path / "uniner_student.json").write_text(json.dumps({"empty_bias": 1.5}))
    assert adapter_settings(str(tmp_path)) == {"empty_bias": 1.5}
    assert HFStudent(str(tiny_model_dir), adapter=str(tmp_path)).empty_bias == 1.5
    assert HFStudent(str(tiny_model_dir), adapter=str(tmp_path), empty_bias=0).empty_bias == 0
    assert HFStudent(str(tiny_model_dir)).empty_bias == 0.0
    (tmp_path / "uniner_student.json").write_text("{oops")
    with pytest.raises(ValueError, match="uniner_student.json"):
        HFStudent(str(tiny_model_dir), adapter=str(tmp_path))


def test_ray_chunks_keep_a_passage_together():
    from spacy_uniner.models.ray_student import chunk_bounds

    ps = [prompts.render_query(t, label) for t in ["A.", "B b.", "C."] for label in "xyz"]
    ps.insert(4, "free text")
    # sizes 2: each chunk runs to the end of the passage it started in
    assert chunk_bounds(ps, 2) == [(0, 3), (3, 5), (5, 7), (7, 10)]
    assert chunk_bounds(ps, 100) == [(0, 10)]
    assert chunk_bounds([], 4) == []
    for start, end in chunk_bounds(ps, 1):
        keys = {p[: p.rfind("USER: ")] for p in ps[start:end] if "USER: " in p}
        assert len(keys) <= 1


def test_a_pickled_student_loads_again(tiny_model_dir):
    import pickle

    student = HFStudent(str(tiny_model_dir), max_new_tokens=6, threads=1).load()
    ps = [prompts.render_query("Ada met Charles in London.", label) for label in ("person", "x")]
    want = student.generate(ps)
    copy = pickle.loads(pickle.dumps(student))
    assert copy._model is None and copy._workspace == {}
    assert [g.text for g in copy.generate(ps)] == [g.text for g in want]


def test_v1_accepts_the_retired_speed_settings_and_warns(tiny_model_dir):
    with pytest.warns(FutureWarning, match="draft_tokens, prepack .* ignored"):
        student = make_hf_student_v1(name=str(tiny_model_dir), prepack=True, draft_tokens=0)
    assert "prepack" not in repr(student)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_hf_student_v1(name=str(tiny_model_dir))  # the old defaults: no warning
