import pytest
import spacy
from spacy.tokens import Span

from spacy_uniner.prompts import parse_query

TEXT = "Ada Lovelace worked with Charles Babbage in London. Ada Lovelace died in London."


def make_nlp(replies, labels=("person", "location"), **cfg):
    nlp = spacy.blank("en")
    model = {"@uniner_models": "test.ScriptedStudent.v1", "replies": dict(replies)}
    if "scores" in cfg:
        model["scores"] = cfg.pop("scores")
    if "fail_on" in cfg:
        model["fail_on"] = cfg.pop("fail_on")
    nlp.add_pipe("universal_ner", config={"labels": list(labels), "model": model, **cfg})
    return nlp


def spans(doc, key="universal_ner"):
    return [(s.text, s.label_) for s in doc.spans[key]]


def test_spans_ents_and_scores():
    nlp = make_nlp({"person": '["Ada Lovelace", "Charles Babbage"]', "location": '["London"]'})
    doc = nlp(TEXT)
    assert spans(doc) == [
        ("Ada Lovelace", "person"),
        ("Charles Babbage", "person"),
        ("London", "location"),
        ("Ada Lovelace", "person"),
        ("London", "location"),
    ]
    group = doc.spans["universal_ner"]
    assert group.attrs["scores"] == [1.0] * 5
    assert [(e.text, e.label_) for e in doc.ents] == spans(doc)
    # character-exact offsets
    assert [(s.start_char, s.end_char) for s in group][:2] == [(0, 12), (25, 40)]


def test_mention_occurring_five_times():
    nlp = make_nlp({"location": '["Rome"]'}, labels=["location"])
    doc = nlp("Rome. Rome! Rome? Rome, and Rome")
    assert len(doc.spans["universal_ner"]) == 5 and len(doc.ents) == 5


def test_mention_absent_from_text_is_counted():
    nlp = make_nlp({"person": '["Ada Lovelace", "Alan Turing"]'}, labels=["person"])
    doc = nlp(TEXT)
    assert spans(doc) == [("Ada Lovelace", "person"), ("Ada Lovelace", "person")]
    assert nlp.get_pipe("universal_ner").stats["mentions_not_found"] == 1


def test_same_mention_under_two_types_keeps_both_spans_one_ent():
    nlp = make_nlp(
        {"city": '["London"]', "location": '["London"]'},
        labels=["city", "location"],
        scores={"city": 0.9, "location": 0.6},
    )
    doc = nlp("She lives in London.")
    assert sorted(spans(doc)) == [("London", "city"), ("London", "location")]
    assert [(e.text, e.label_) for e in doc.ents] == [("London", "city")]
    scores = dict(zip([s.label_ for s in doc.spans["universal_ner"]],
                      doc.spans["universal_ner"].attrs["scores"]))
    assert scores == pytest.approx({"city": 0.9, "location": 0.6})


def test_multi_label_false_keeps_the_best_type_of_each_span_only():
    replies = {"city": '["London", "Paris"]', "location": '["London"]', "person": '["Paris"]'}
    scores = {"city": 0.6, "location": 0.9, "person": 0.3}
    nlp = make_nlp(replies, labels=["city", "location", "person"], scores=scores,
                   multi_label=False)
    doc = nlp("From London to Paris.")
    assert sorted(spans(doc)) == [("London", "location"), ("Paris", "city")]
    assert doc.spans["universal_ner"].attrs["scores"] == pytest.approx([0.9, 0.6])
    # true (and null with a student that records nothing) keep every type
    for setting in (True, None):
        doc = make_nlp(replies, labels=["city", "location", "person"], scores=scores,
                       multi_label=setting)("From London to Paris.")
        assert len(doc.spans["universal_ner"]) == 4


def test_multi_label_null_takes_the_students_recorded_choice():
    nlp = make_nlp({"city": '["London"]', "location": '["London"]'},
                   labels=["city", "location"], scores={"city": 0.9, "location": 0.6})
    pipe = nlp.get_pipe("universal_ner")
    pipe.model.settings = {"multi_label": False}  # as HFStudent reads uniner_student.json
    assert spans(nlp("London.")) == [("London", "city")]
    pipe.multi_label = True  # the component's own setting wins
    assert len(nlp("London.").spans["universal_ner"]) == 2
    with pytest.raises(ValueError, match="multi_label"):  # the config names the setting
        make_nlp({}, multi_label="no")
    from spacy_uniner.component import UniversalNER

    with pytest.raises(ValueError, match="multi_label must be true, false or null, got 'no'"):
        UniversalNER(nlp.vocab, pipe.model, multi_label="no")


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("score", [("York", "city")]),
        ("longest", [("New York City", "location")]),
        ("first", [("New York City", "location")]),
    ],
)
def test_ents_policies(policy, expected):
    nlp = make_nlp(
        {"city": '["York"]', "location": '["New York City"]'},
        labels=["city", "location"],
        scores={"city": 0.9, "location": 0.5},
        ents_policy=policy,
    )
    doc = nlp("I love New York City .")
    assert [(e.text, e.label_) for e in doc.ents] == expected
    assert len(doc.spans["universal_ner"]) == 2


def test_threshold_drops_low_scores():
    nlp = make_nlp({"person": '["Ada Lovelace"]', "location": '["London"]'},
                   scores={"person": 0.9, "location": 0.2}, threshold=0.5)
    doc = nlp(TEXT)
    assert {label for _, label in spans(doc)} == {"person"}


def test_threshold_null_takes_the_students_recorded_choice():
    nlp = make_nlp({"person": '["Ada Lovelace"]', "location": '["London"]'},
                   scores={"person": 0.9, "location": 0.2})
    pipe = nlp.get_pipe("universal_ner")
    both = {"person", "location"}
    assert pipe.threshold is None and {l for _, l in spans(nlp(TEXT))} == both  # recorded: none
    pipe.model.settings = {"threshold": 0.5}  # as HFStudent reads uniner_student.json
    assert {label for _, label in spans(nlp(TEXT))} == {"person"}
    pipe.threshold = 0.0  # the component's own setting wins
    assert {label for _, label in spans(nlp(TEXT))} == both


def test_existing_ents_kept_unless_overwrite():
    for overwrite, first_london in [(False, "GPE"), (True, "location")]:
        nlp = make_nlp({"person": '["Ada Lovelace"]', "location": '["London"]'},
                       overwrite_ents=overwrite)
        doc = nlp.make_doc(TEXT)
        doc.ents = [Span(doc, 7, 8, label="GPE")]  # first "London"
        doc = nlp.get_pipe("universal_ner")(doc)
        labels = [(e.start, e.label_) for e in doc.ents]
        assert (7, first_london) in labels
        assert [label for _, label in labels].count("location") == (1 if not overwrite else 2)
        assert [label for _, label in labels].count("person") == 2


def test_write_ents_off_and_custom_spans_key():
    nlp = make_nlp({"person": '["Ada Lovelace"]'}, write_ents=False, spans_key="open")
    doc = nlp(TEXT)
    assert doc.ents == () and "universal_ner" not in doc.spans
    assert spans(doc, "open") == [("Ada Lovelace", "person")] * 2


def test_labels_per_call_through_component_cfg():
    nlp = make_nlp({"person": '["Ada Lovelace"]', "location": '["London"]'}, labels=["person"])
    docs = list(nlp.pipe([TEXT], component_cfg={"universal_ner": {"labels": ["location"]}}))
    assert {label for _, label in spans(docs[0])} == {"location"}
    doc = nlp(TEXT, component_cfg={"universal_ner": {"labels": ["person", "location"]}})
    assert {label for _, label in spans(doc)} == {"person", "location"}


def test_empty_label_list_is_a_clear_error():
    nlp = make_nlp({}, labels=[])
    with pytest.raises(ValueError, match="has no labels"):
        nlp(TEXT)
    with pytest.raises(ValueError, match="has no labels"):
        list(nlp.pipe([TEXT]))


@pytest.mark.parametrize("bad", ["person", [""], ["  "], [3], {"person": 1}])
def test_invalid_labels(bad):
    nlp = make_nlp({}, labels=["person"])
    with pytest.raises((TypeError, ValueError), match="label"):
        nlp(TEXT, component_cfg={"universal_ner": {"labels": bad}})


def test_labels_with_quotes_newlines_and_duplicates():
    labels = ['"quoted" type', "multi\nline  type", "person", "person"]
    with pytest.warns(UserWarning) as record:
        nlp = make_nlp({'"quoted" type': '["Ada Lovelace"]', "multi line type": '["London"]'},
                       labels=labels)
    # a Python user sees both, through warnings (spaCy's convention for fixable input)
    assert [str(w.message) for w in record] == [
        "universal_ner label 'multi\\nline  type' normalised to 'multi line type'",
        "universal_ner label 'person' given twice; asked once",
    ]
    pipe = nlp.get_pipe("universal_ner")
    assert pipe.labels == ('"quoted" type', "multi line type", "person")
    with pytest.warns(UserWarning, match="'person' given twice"):
        nlp.get_pipe("universal_ner").add_label("person")
    doc = nlp(TEXT)
    assert {label for _, label in spans(doc)} == {'"quoted" type', "multi line type"}
    questions = {parse_query(p)[1] for p in pipe.model.prompts}
    assert questions == {'"quoted" type', "multi line type", "person"}


@pytest.mark.parametrize("text", ["", "   \n\t ", "x"])
def test_empty_whitespace_and_one_character_docs(text):
    nlp = make_nlp({"person": '["x"]'}, labels=["person"])
    doc = nlp(text)
    pipe = nlp.get_pipe("universal_ner")
    if text.strip():
        assert spans(doc) == [("x", "person")]
    else:
        assert spans(doc) == [] and doc.ents == () and pipe.model.prompts == []


@pytest.mark.parametrize(
    "text,mention",
    [
        ("I ❤️ Paris 🇫🇷 and Ada 👩‍💻 too.", "Paris"),
        ("我住在北京，喜欢北京的秋天。", "北京"),
        ("زرت القاهرة في الصيف", "القاهرة"),
    ],
)
def test_emoji_cjk_and_rtl_text(text, mention):
    nlp = make_nlp({"location": f'["{mention}"]'}, labels=["location"])
    doc = nlp(text)
    found = doc.spans["universal_ner"]
    assert len(found) >= 1
    assert all(mention in s.text for s in found)


def test_enormous_document_is_windowed_not_truncated():
    sentence = "Grace Hopper worked at Remington Rand on COBOL compilers for years. "
    text = (sentence * 5000)[:300_000]
    nlp = make_nlp({"person": '["Grace Hopper"]'}, labels=["person"], max_passage_tokens=256)
    doc = nlp(text)
    pipe = nlp.get_pipe("universal_ner")
    assert pipe.stats["windows"] > 200
    expected = text.count("Grace Hopper")
    assert len(doc.spans["universal_ner"]) == expected, "every occurrence, de-duplicated"
    assert doc.spans["universal_ner"][-1].end_char > 290_000


def test_overlapping_windows_do_not_duplicate_spans():
    text = ("Ada Lovelace met Babbage . " * 40).strip()
    nlp = make_nlp({"person": '["Ada Lovelace", "Babbage"]'}, labels=["person"],
                   max_passage_tokens=20, window_overlap=8)
    doc = nlp(text)
    assert nlp.get_pipe("universal_ner").stats["windows"] > 5
    starts = [(s.start, s.end, s.label_) for s in doc.spans["universal_ner"]]
    assert len(starts) == len(set(starts)) == 80


def test_pipe_keeps_order_and_batches_queries_across_docs():
    nlp = make_nlp({"person": '["Ada"]', "location": '["Paris"]'})
    texts = [f"Ada {i} went to Paris." for i in range(10)]
    docs = list(nlp.pipe(texts, batch_size=5))
    assert [d.text for d in docs] == texts
    model = nlp.get_pipe("universal_ner").model
    assert model.calls == 2, "one model call per batch of documents"
    assert len(model.prompts) == 20
    assert all(spans(d) == [("Ada", "person"), ("Paris", "location")] for d in docs)


def test_batch_errors_go_to_the_error_handler():
    nlp = make_nlp({"person": '["Ada"]'}, labels=["person"], fail_on=["BOOM"])
    texts = ["Ada one.", "Ada BOOM.", "Ada three."]
    with pytest.raises(RuntimeError, match="scripted failure"):
        list(nlp.pipe(texts, batch_size=1))
    seen = []
    nlp.get_pipe("universal_ner").set_error_handler(
        lambda name, proc, docs, e: seen.append((name, [d.text for d in docs], str(e)))
    )
    docs = list(nlp.pipe(texts, batch_size=1))
    assert [d.text for d in docs] == ["Ada one.", "Ada three."]
    assert seen[0][0] == "universal_ner" and seen[0][1] == ["Ada BOOM."]


@pytest.mark.parametrize(
    "reply",
    ["I think it is Ada.", '["Ada", "Lon', "[[1, 2], [3]]", "[null, 5, true]", '{"a": 1}', ""],
)
def test_damaged_replies_never_crash_and_are_counted(reply):
    nlp = make_nlp({"person": reply}, labels=["person"], store_replies=True)
    doc = nlp("Ada went to London.")
    pipe = nlp.get_pipe("universal_ner")
    record = doc.user_data["universal_ner"]["replies"][0]
    assert record["reply"] == reply
    if reply == '["Ada", "Lon':
        assert spans(doc) == [("Ada", "person")]
    else:
        assert spans(doc) == []
    failures = pipe.stats["parse_failures"]
    assert failures == (1 if reply in ("I think it is Ada.", '{"a": 1}', "") else 0)
    assert (record["error"] is None) == (failures == 0)


def test_definition_and_dataset_variants_change_the_prompt():
    nlp = make_nlp({}, labels=["person"], dataset="CoNLL-2003",
                   label_definitions={"person": "a human being"})
    nlp("Ada went to London.")
    prompt = nlp.get_pipe("universal_ner").model.prompts[0]
    assert "USER: Dataset: CoNLL-2003\nText: Ada went to London." in prompt
    assert prompt.endswith("What describes a human being in the text? ASSISTANT:")


def test_to_disk_from_disk_roundtrip(tmp_path):
    nlp = make_nlp({"person": '["Ada Lovelace"]'}, labels=["person", "location"])
    nlp.to_disk(tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "universal_ner" / "cfg").exists()
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("universal_ner").labels == ("person", "location")
    assert spans(loaded(TEXT)) == [("Ada Lovelace", "person")] * 2
    restored = make_nlp({}, labels=["x"])
    restored.get_pipe("universal_ner").from_bytes(nlp.get_pipe("universal_ner").to_bytes())
    assert restored.get_pipe("universal_ner").labels == ("person", "location")


@pytest.mark.parametrize("cfg,match", [
    ({"ents_policy": "random"}, "ents_policy"),
    ({"max_passage_tokens": 0}, "max_passage_tokens"),
    ({"window_overlap": 500}, "window_overlap"),
    ({"spans_key": ""}, "spans_key"),
])
def test_bad_config_is_rejected(cfg, match):
    with pytest.raises(ValueError, match=match):
        make_nlp({}, **cfg)


@pytest.mark.parametrize("threshold", [1.5, -0.1, 2])
def test_threshold_outside_0_1_is_refused_naming_the_value(threshold):
    with pytest.raises(ValueError, match=rf"between 0 and 1 .*, got {threshold!r}$"):
        make_nlp({}, threshold=threshold)


@pytest.mark.parametrize("threshold", [0, 0.0, 0.5, 1, 1.0])
def test_threshold_bounds_are_accepted(threshold):
    make_nlp({}, threshold=threshold)


def test_definitions_for_labels_not_asked_are_refused_naming_them():
    with pytest.raises(ValueError) as err:
        make_nlp({}, labels=["person"],
                 label_definitions={"person": "a human being", "disease": "an illness"})
    message = str(err.value)
    assert "define labels that are not asked: 'disease'" in message
    assert "(labels: 'person')" in message and "Add them to labels" in message
    with pytest.raises(ValueError, match="definition of 'person' must be non-empty text"):
        make_nlp({}, labels=["person"], label_definitions={"person": " "})


def test_definitions_are_normalised_like_labels_and_free_without_configured_labels():
    with pytest.warns(UserWarning, match="normalised"):
        nlp = make_nlp({}, labels=["multi\nline  type"],
                       label_definitions={"multi  line type": "a thing"})
    assert nlp.get_pipe("universal_ner").label_definitions == {"multi line type": "a thing"}
    # labels given per call: any label may be defined
    nlp = make_nlp({}, labels=[], label_definitions={"person": "a human being"})
    nlp("Ada went to London.", component_cfg={"universal_ner": {"labels": ["person"]}})
    assert nlp.get_pipe("universal_ner").model.prompts[0].endswith(
        "What describes a human being in the text? ASSISTANT:"
    )


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_pipe_batch_size_below_one_is_refused_naming_the_value(batch_size):
    nlp = make_nlp({"person": '["Ada"]'}, labels=["person"])
    with pytest.raises(ValueError, match=rf"needs batch_size >= 1.*got {batch_size!r}"):
        list(nlp.pipe(["Ada one.", "Ada two."], batch_size=batch_size))
    with pytest.raises(ValueError, match="needs batch_size >= 1"):
        nlp.get_pipe("universal_ner").pipe([nlp.make_doc("Ada.")], batch_size=batch_size)


def test_a_span_group_on_an_incoming_doc_is_extended_not_replaced():
    nlp = make_nlp({"person": '["Ada Lovelace"]', "location": '["London"]'},
                   scores={"person": 0.9, "location": 0.6})
    doc = nlp.make_doc(TEXT)
    from spacy.tokens import SpanGroup

    doc.spans["universal_ner"] = SpanGroup(
        doc, name="universal_ner",
        spans=[Span(doc, 4, 6, label="person"), Span(doc, 0, 2, label="person")],
        attrs={"scores": [0.3, 0.5]},
    )
    doc = nlp.get_pipe("universal_ner")(doc)
    group = doc.spans["universal_ner"]
    got = [(s.text, s.label_, round(score, 2)) for s, score in zip(group, group.attrs["scores"])]
    assert got == [
        ("Charles Babbage", "person", 0.3),  # kept, in its place
        ("Ada Lovelace", "person", 0.9),  # already there: the higher score
        ("London", "location", 0.6),
        ("Ada Lovelace", "person", 0.9),
        ("London", "location", 0.6),
    ]
    # running again adds nothing; other labels in a later call are added
    doc = nlp.get_pipe("universal_ner")(doc)
    assert len(doc.spans["universal_ner"]) == 5


def test_a_group_without_scores_under_the_key_is_an_error_naming_it():
    nlp = make_nlp({"person": '["Ada Lovelace"]'}, labels=["person"])
    doc = nlp.make_doc(TEXT)
    doc.spans["universal_ner"] = [Span(doc, 4, 6, label="PER")]
    with pytest.raises(ValueError, match=r"doc.spans\['universal_ner'\] already holds 1 spans "
                                         r"without one score each.*own spans_key"):
        nlp.get_pipe("universal_ner")(doc)


def test_a_second_component_needs_its_own_spans_key():
    nlp = make_nlp({"person": '["Ada Lovelace"]'}, labels=["person"])
    model = {"@uniner_models": "test.ScriptedStudent.v1", "replies": {"location": '["London"]'}}
    with pytest.raises(ValueError) as err:
        nlp.add_pipe("universal_ner", name="places",
                     config={"labels": ["location"], "model": model})
    assert "already has a universal_ner component, 'universal_ner', writing " \
           "doc.spans['universal_ner']; give 'places' its own key" in str(err.value)
    assert nlp.pipe_names == ["universal_ner"]
    nlp.add_pipe("universal_ner", name="places",
                 config={"labels": ["location"], "model": model, "spans_key": "places"})
    doc = nlp(TEXT)
    assert spans(doc) == [("Ada Lovelace", "person")] * 2
    assert spans(doc, "places") == [("London", "location")] * 2
