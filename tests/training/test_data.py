import json
import random
from collections import Counter

import pytest

from spacy_uniner.training.data import (
    EvalDataError,
    LabelledPassage,
    build_conversations,
    check_not_eval_data,
    known_types,
    load_definitions,
    read_bio_passages,
    read_pile_ner,
    read_teacher_rows,
    sample_negatives,
    type_key,
)


@pytest.fixture(scope="module")
def pile(shared_data):
    return read_pile_ner(shared_data / "pile-ner" / "pile_ner_type_subset.jsonl")


def test_pile_ner_queries_grouped_into_passages(pile, shared_data):
    assert len(pile) == 882
    rows = [json.loads(line) for line in
            (shared_data / "pile-ner" / "pile_ner_type_subset.jsonl").read_text().splitlines()]
    positives = sum(1 for r in rows if r["output"] != "[]")
    assert sum(len(p.positives) for p in pile) == positives
    assert sum(len(p.known_negatives) for p in pile) == len(rows) - positives
    for p in pile[:50]:
        for mentions in p.positives.values():
            assert all(m in p.text or m.lower() in p.text.lower() or True for m in mentions)


def test_one_conversation_per_passage_with_shuffled_types(pile):
    convs, stats = build_conversations(pile, negative_sampling="frequency", negatives=2, seed=1)
    assert stats.conversations == len(convs) == 882
    for conv, passage in zip(convs, pile):
        assert conv.passage == passage.text
        assert len(conv.questions) == len(conv.answers) == len(conv.labels)
        for label, answer in zip(conv.labels, conv.answers):
            assert json.loads(answer) == passage.positives.get(label, [])
        assert set(passage.positives) <= set(conv.labels)
    orders = [tuple(c.labels) for c in convs if len(c.labels) > 2]
    assert any(list(o) != sorted(o) for o in orders), "types are shuffled"
    again, _ = build_conversations(pile, negative_sampling="frequency", negatives=2, seed=1)
    assert [c.labels for c in again] == [c.labels for c in convs], "seeded"


def test_negative_sampling_none_uniform_frequency(pile):
    none, stats = build_conversations(pile, negative_sampling="none")
    assert stats.negative_queries == 0
    assert all(all(json.loads(a) for a in c.answers) for c in none)
    for strategy in ("uniform", "frequency"):
        convs, stats = build_conversations(pile, negative_sampling=strategy, negatives=3, seed=0)
        assert stats.negative_queries == stats.known_negative_queries + stats.sampled_negative_queries
        for conv, p in zip(convs, pile):
            negs = [t for t in conv.labels if t not in p.positives]
            assert len(negs) == 3 and len(set(negs)) == 3
    ratio, stats = build_conversations(pile, negative_ratio=2.0, seed=0)
    assert stats.negative_queries == 2 * stats.positive_queries or stats.negative_queries > 0


def test_frequency_sampling_prefers_frequent_types():
    freq = Counter({"person": 1000, "rare": 1})
    freq.update({f"t{i}": 1 for i in range(10)})
    rng = random.Random(0)
    picks = Counter(t for _ in range(300) for t in sample_negatives(rng, freq, set(), 1, "frequency"))
    assert picks["person"] > 250
    uniform = Counter(t for _ in range(300) for t in sample_negatives(rng, freq, set(), 1, "uniform"))
    assert uniform["person"] < 100
    assert sample_negatives(rng, freq, {"person"}, 20, "frequency").count("person") == 0


def test_definition_and_all_in_one_variants(pile, shared_data):
    defs = load_definitions(shared_data / "pile-ner" / "type_definitions.json")
    assert len(defs) > 300 and "person" in defs
    convs, stats = build_conversations(pile[:40], variant="definition", definitions=defs, seed=0)
    for conv in convs:
        for label, question in zip(conv.labels, conv.questions):
            if label in defs:
                assert defs[label] in question and question.startswith("What describes ")
    aio, _ = build_conversations(pile[:5], variant="all-in-one", seed=0)
    for conv, p in zip(aio, pile[:5]):
        assert len(conv.questions) == 1
        pairs = json.loads(conv.answers[0])
        assert sorted(map(tuple, pairs)) == sorted((m, t) for t, ms in p.positives.items() for m in ms)


def test_bio_sets_use_dataset_template_and_all_types(shared_data):
    path = shared_data / "benchmarks" / "bio" / "crossner" / "conll2003" / "train.txt"
    passages = read_bio_passages(path, "CoNLL-2003", "conll2003", limit=20, seed=0)
    assert len(passages) == 20
    convs, stats = build_conversations(passages, seed=0)
    assert stats.sampled_negative_queries == 0
    for conv in convs:
        assert conv.dataset == "CoNLL-2003"
        assert sorted(conv.labels) == sorted(["person", "location", "organization", "miscellaneous entity"])
        assert conv.render().startswith(
            "A virtual assistant answers questions from a user based on the provided text. "
            "USER: Dataset: CoNLL-2003\nText: "
        )


@pytest.mark.parametrize("path", [
    "../shared/data/benchmarks/bio/crossner/ai/train.txt",
    "../shared/data/benchmarks/bio/mit/movie/train.txt",
    "../shared/data/benchmarks/uniner/CrossNER_AI.json",
])
def test_zero_shot_eval_sets_are_refused(path):
    with pytest.raises(EvalDataError, match="allow-eval-data"):
        check_not_eval_data(path, allow=False)
    check_not_eval_data(path, allow=True)
    check_not_eval_data("../shared/data/benchmarks/bio/crossner/conll2003/train.txt", allow=False)


def test_teacher_rows():
    rows = [{"passage_id": "7", "text": "Ada met Babbage in London.",
             "entities": [["Ada", "person"], ["Babbage", "person"], ["London", "city"],
                          ["Ada", "person"]]}]
    (p,) = read_teacher_rows(rows)
    assert p.positives == {"person": ["Ada", "Babbage"], "city": ["London"]}
    assert isinstance(p, LabelledPassage)


# --- the dev split, BIO sets in full, plain questions, known negatives ------------------

CONLL_TRAIN = "benchmarks/bio/crossner/conll2003/train.txt"
BC5CDR_TRAIN = "benchmarks/bio/bc5cdr/train.tsv"


def _build(tmp_path, *args):
    from typer.testing import CliRunner

    from train.build_data import app

    out = tmp_path / "instruct"
    result = CliRunner().invoke(app, [str(a) for a in args] + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "stats.json").read_text())


def test_build_data_leaves_out_the_pile_dev_split_by_default(shared_data, tmp_path):
    from datasets import load_from_disk

    from spacy_uniner.evaluation.benchmarks import load_pile_ner_dev

    pile_path = shared_data / "pile-ner" / "pile_ner_type_subset.jsonl"
    dev = load_pile_ner_dev(pile_path)
    out, stats = _build(tmp_path, "--pile-ner", pile_path)
    assert stats["pile_ner_split"]["used"] == "train"
    assert stats["pile_ner_split"]["dev_passages_left_out"] == len(dev.passages) == 131
    trained = load_from_disk(str(out))
    assert len(trained) == stats["conversations"] == 882 - 131
    assert not {p.id for p in dev.passages} & set(trained["id"])
    assert not {p.text for p in dev.passages} & set(trained["passage"])
    out_all, stats_all = _build(tmp_path / "all", "--pile-ner", pile_path, "--pile-split", "all")
    assert stats_all["pile_ner_split"] == {**stats["pile_ner_split"], "used": "all",
                                           "dev_passages_left_out": 0}
    assert stats_all["conversations"] == 882


def test_teacher_passages_cut_from_pile_dev_passages_are_left_out(shared_data, tmp_path):
    from datasets import load_from_disk

    from spacy_uniner.evaluation.benchmarks import load_pile_ner_dev

    pile_path = shared_data / "pile-ner" / "pile_ner_type_subset.jsonl"
    dev_texts = [p.text for p in load_pile_ner_dev(pile_path).passages]
    train_text = next(p.text for p in read_pile_ner(pile_path) if p.text not in dev_texts)
    window = " ".join(dev_texts[0].split()[:12])  # a teacher window cut from a dev passage
    rows = [{"passage_id": "a", "text": dev_texts[1], "entities": [["x", "thing"]]},
            {"passage_id": "b", "text": window, "entities": []},
            {"passage_id": "c", "text": train_text, "entities": [["y", "thing"]]},
            {"passage_id": "d", "text": "Nothing from the Pile here.", "entities": []}]
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, stats = _build(tmp_path, "--teacher", teacher, "--pile-ner", pile_path)
    assert stats["pile_ner_split"]["teacher_passages_left_out"] == 2
    ids = set(load_from_disk(str(out))["id"])
    assert {"teacher-c", "teacher-d"} <= ids and not {"teacher-a", "teacher-b"} & ids
    _, kept = _build(tmp_path / "all", "--teacher", teacher, "--pile-ner", pile_path,
                     "--pile-split", "all")
    assert kept["pile_ner_split"]["teacher_passages_left_out"] == 0


def test_bio_sets_are_read_in_full(shared_data):
    conll = read_bio_passages(shared_data / CONLL_TRAIN, "CoNLL-2003", "conll2003")
    assert len(conll) == -(-14041 // 4) == 3511
    bc5cdr = read_bio_passages(shared_data / BC5CDR_TRAIN, "BC5CDR", "bc5cdr")
    assert len(bc5cdr) == -(-4560 // 4) == 1140
    convs, stats = build_conversations(conll + bc5cdr, seed=0)
    assert stats.conversations == 3511 + 1140
    assert stats.by_source == {"CoNLL-2003": 3511, "BC5CDR": 1140}
    assert sum(len(m) for p in bc5cdr for m in p.positives.values()) > 5000


def test_plain_share_asks_natural_names_without_dataset_field(shared_data):
    from spacy_uniner.evaluation.benchmarks import dev_suite

    passages = read_bio_passages(shared_data / CONLL_TRAIN, "CoNLL-2003", "conll2003",
                                 plain_share=0.5, seed=3)
    plain = [p for p in passages if p.dataset is None]
    assert len(plain) == round(0.5 * 3511)
    dev_labels = dev_suite(shared_data, limit=1, columns=["conll2003-dev"])["conll2003-dev"].labels
    convs, stats = build_conversations(passages, seed=0)
    assert stats.plain_bio_passages == len(plain)
    for conv, p in zip(convs, passages):
        rendered = conv.render()
        if p.dataset is None:
            assert sorted(conv.labels) == sorted(dev_labels) == ["location", "organization",
                                                                 "person"]
            assert "Dataset:" not in rendered and "miscellaneous" not in rendered
            assert conv.source == "CoNLL-2003"
        else:
            assert "miscellaneous entity" in conv.labels
            assert rendered.count("Dataset: CoNLL-2003\n") == 1
    # the plain passages are a seeded share: same seed, same passages; none without the flag
    again = read_bio_passages(shared_data / CONLL_TRAIN, "CoNLL-2003", "conll2003",
                              plain_share=0.5, seed=3)
    assert [p.id for p in again if p.dataset is None] == [p.id for p in plain]
    with_misc = [p for p in plain if "misc" in p.aliases]
    assert with_misc and all("miscellaneous entity" not in p.positives for p in with_misc)
    default = read_bio_passages(shared_data / BC5CDR_TRAIN, "BC5CDR", "bc5cdr", limit=30)
    assert all(p.dataset == "BC5CDR" for p in default)


def test_type_key_and_known_types():
    assert type_key("Organizations") == type_key("organization") == "organization"
    assert type_key("chemical_compound") == type_key("Chemical compound")
    assert type_key("class") == "class" and type_key("gas") == "gas"
    p = LabelledPassage("x", "t", {"organization": ["ACME"]}, "CoNLL-2003",
                        aliases=["organisation"])
    assert known_types(p) == {"organization", "organisation"}


def test_drop_known_negatives_on_bio_and_open_passages(shared_data):
    bio = read_bio_passages(shared_data / CONLL_TRAIN, "CoNLL-2003", "conll2003", limit=40,
                            plain_share=0.25)
    # open-type passages whose types name CoNLL's under other spellings, and others
    pool = ["Organisation", "Person", "persons", "misc", "LOCATION", "date", "city", "chemical"]
    open_ = [LabelledPassage(f"o{i}", f"passage {i}", {t: [f"m{i}"]}, "teacher")
             for i, t in enumerate(pool)]
    open_.append(LabelledPassage("p", "Ada met Babbage.", {"person": ["Ada", "Babbage"]},
                                 "teacher"))
    passages = bio + open_
    kwargs = dict(negatives=len(pool), bio_negatives=len(pool), seed=0)
    kept_convs, dropped = build_conversations(passages, drop_known_negatives=True, **kwargs)
    all_convs, plain = build_conversations(passages, **kwargs)
    assert dropped.dropped_known_negatives > 0 and plain.dropped_known_negatives == 0
    assert (plain.sampled_negative_queries - dropped.sampled_negative_queries
            == dropped.dropped_known_negatives)

    def sampled(conv, p):
        own = set(p.positives) | set(p.known_negatives) | set(p.closed_types or [])
        return [t for t in conv.labels if t not in own]

    leaked = 0
    for conv, p in zip(kept_convs, passages):
        assert not {type_key(t) for t in sampled(conv, p)} & known_types(p), p.id
        if p.closed_types is not None and p.dataset is None:
            assert sampled(conv, p) == []  # plain BIO questions get no sampled negatives
    for conv, p in zip(all_convs, passages):
        leaked += bool({type_key(t) for t in sampled(conv, p)} & known_types(p))
    assert leaked > 0, "without the flag, known types come back as negatives"
    ada = next(c for c in kept_convs if c.id == "p")
    assert "Person" not in ada.labels and "persons" not in ada.labels and "date" in ada.labels


def test_build_data_cli_new_options_in_stats(shared_data, tmp_path):
    rows = [{"passage_id": str(i), "text": f"Text {i} about things.",
             "entities": [[f"m{i}", t]]}
            for i, t in enumerate(["Organisation", "Person", "date", "city", "misc"])]
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--teacher", teacher, "--bio", f"{shared_data / CONLL_TRAIN}:CoNLL-2003:conll2003",
            "--bio-limit", 40, "--plain-share", 0.5, "--bio-negatives", 3, "--negatives", 3]
    _, stats = _build(tmp_path, *args, "--drop-known-negatives", "--lowercase-share", 0.5)
    assert stats["plain_share"] == 0.5 and stats["plain_bio_passages"] == 20
    assert stats["lowercase_share"] == 0.5
    assert stats["lowercased"] == round(0.5 * stats["conversations"]) > 0
    assert stats["drop_known_negatives"] is True and stats["dropped_known_negatives"] > 0
    assert stats["bio_limit"] == 40 and stats["pile_ner_split"]["dev_passages_left_out"] == 0
    _, off = _build(tmp_path / "off", *args)
    assert off["dropped_known_negatives"] == 0 and off["lowercased"] == 0


def test_student_recipe_build_data_still_runs(shared_data, tmp_path):
    """project.yml's build-data command line as it stands (defaults plus the recipe's flags)."""
    _, stats = _build(
        tmp_path, "--pile-ner", shared_data / "pile-ner" / "pile_ner_type_subset.jsonl",
        "--bio", f"{shared_data / CONLL_TRAIN}:CoNLL-2003:conll2003",
        "--bio", f"{shared_data / BC5CDR_TRAIN}:BC5CDR:bc5cdr", "--bio-limit", 20,
        "--negative-sampling", "frequency", "--negative-ratio", 0.5, "--variant", "type",
        "--seed", 0, "--pile-split", "train")
    assert stats["by_source"] == {"pile-ner": 751, "CoNLL-2003": 20, "BC5CDR": 20}
    assert stats["plain_bio_passages"] == 0 and stats["dropped_known_negatives"] == 0


@pytest.mark.parametrize("rel", ["benchmarks/bio/crossner/conll2003/dev.txt",
                                 "benchmarks/bio/bc5cdr/devel.tsv"])
def test_dev_suite_bio_files_are_refused_for_training(shared_data, rel):
    with pytest.raises(EvalDataError, match="dev suite"):
        check_not_eval_data(shared_data / rel, allow=False)
    check_not_eval_data(shared_data / rel, allow=True)


def test_lowercase_share_lowers_a_seeded_share_and_leaves_the_rest(pile, shared_data):
    bio = read_bio_passages(shared_data / CONLL_TRAIN, "CoNLL-2003", "conll2003", limit=30,
                            plain_share=0.5)
    passages = pile[:60] + bio
    kw = dict(negative_sampling="frequency", negative_ratio=0.5, seed=3)
    base, base_stats = build_conversations(passages, **kw)
    lowered, stats = build_conversations(passages, lowercase_share=0.25, **kw)
    assert base_stats.lowercased == 0 and stats.lowercased == round(0.25 * len(base)) > 0
    changed = 0
    for before, after in zip(base, lowered):
        # the same passages, types and questions in the same order; only the case moves
        assert (after.id, after.questions, after.labels) == (before.id, before.questions,
                                                             before.labels)
        if after == before:
            continue
        changed += 1
        assert after.passage == before.passage.lower() and after.passage != before.passage
        for a, b in zip(after.answers, before.answers):
            assert json.loads(a) == [m.lower() for m in json.loads(b)]
            # a mention of the passage stays a mention of the lowered passage
            assert all(m.lower() in after.passage for m in json.loads(b) if m in before.passage)
    # a conversation already in lower case counts as lowered but compares equal
    assert 0 < changed <= stats.lowercased
    assert build_conversations(passages, lowercase_share=0.25, **kw)[0] == lowered  # seeded
    aio, _ = build_conversations(pile[:5], variant="all-in-one", lowercase_share=1.0, seed=0)
    for conv, p in zip(aio, pile[:5]):
        assert sorted(map(tuple, json.loads(conv.answers[0]))) == sorted(
            (m.lower(), t) for t, ms in p.positives.items() for m in ms)
    with pytest.raises(ValueError, match="lowercase_share"):
        build_conversations(passages, lowercase_share=1.5)
