from spacy_uniner.teacher.filters import filter_reply, is_else_type, is_english
from spacy_uniner.teacher.replay import render_reply


def test_fig1_reply_parses():
    result = filter_reply('[("Ada Lovelace", "person"), ("London", "city")]')
    assert result.parsed and result.entities == [("Ada Lovelace", "person"), ("London", "city")]
    assert not result.drops


def test_prose_around_the_list():
    result = filter_reply('Sure! Here they are:\n[("Paris", "city")]\nHope this helps.')
    assert result.entities == [("Paris", "city")]
    assert "text before list" in result.repairs and "text after list" in result.repairs


def test_truncated_list_keeps_complete_items():
    result = filter_reply('[("Paris", "city"), ("Berlin", "city"), ("Ro')
    assert result.entities == [("Paris", "city"), ("Berlin", "city")]
    assert "truncated list" in result.repairs


def test_single_quotes_and_apostrophes():
    result = filter_reply("[('Paris', 'city'), (\"O'Neill\", 'person')]")
    assert result.entities == [("Paris", "city"), ("O'Neill", "person")]


def test_nested_tuples_are_counted_not_lost():
    result = filter_reply('[(("Paris", "France"), "city"), ("Rome", "city"), ("lonely",)]')
    assert result.entities == [("Rome", "city")]
    assert result.drops["malformed_item"] == 2


def test_ten_thousand_entities():
    pairs = [(f"entity {i}", f"type {i % 50}") for i in range(10_000)]
    result = filter_reply(render_reply(pairs))
    assert result.parsed and len(result.entities) == 10_000


def test_unparseable_reply_is_counted():
    result = filter_reply("I'm sorry, but I cannot help with that request.")
    assert not result.parsed and result.entities == []
    assert result.drops["unparseable_reply"] == 1
    assert filter_reply("").drops["unparseable_reply"] == 1


def test_else_family_and_non_english_are_dropped_by_reason():
    reply = render_reply(
        [
            ("Paris", "city"),
            ("x", "None"),
            ("y", "N/A"),
            ("z", "MISC"),
            ("w", "else"),
            ("東京", "city"),
            ("Tokyo", "город"),
            ("José Martí", "person"),
        ]
    )
    result = filter_reply(reply)
    assert result.entities == [("Paris", "city"), ("José Martí", "person")]
    assert result.drops["else_type"] == 4
    assert result.drops["non_english"] == 2


def test_helpers():
    assert is_else_type(" Misc. ") and is_else_type("NA") and not is_else_type("nation")
    assert is_english("Zürich") and is_english("α-synuclein") and is_english("2024")
    assert not is_english("Москва") and not is_english("折扣券报告")
