import pytest

from spacy_uniner.parsing import MAX_DEPTH, parse_student_reply, parse_teacher_reply


def test_clean_json_list():
    parsed = parse_student_reply('["Ada Lovelace", "Charles Babbage"]')
    assert parsed.ok and parsed.items == ["Ada Lovelace", "Charles Babbage"]
    assert parsed.repairs == [] and parsed.dropped == 0


def test_empty_list_is_a_real_empty_answer():
    parsed = parse_student_reply("[]")
    assert parsed.ok and parsed.items == []


@pytest.mark.parametrize(
    "reply,error",
    [
        ("", "empty reply"),
        ("   ", "empty reply"),
        ("The person in the text is Guido van Rossum.", "no list in reply"),
        ('["Par', "truncated list with no complete item"),
        ("[foo, bar]", "list is not a valid literal"),
        ("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2), f"list nested deeper than {MAX_DEPTH}"),
    ],
)
def test_garbage_is_a_counted_failure_not_an_empty_answer(reply, error):
    parsed = parse_student_reply(reply)
    assert not parsed.ok
    assert parsed.items == []
    assert parsed.error == error


def test_non_string_reply():
    parsed = parse_student_reply(None)  # type: ignore[arg-type]
    assert not parsed.ok and "NoneType" in parsed.error


def test_prose_around_the_list():
    parsed = parse_student_reply('Sure! The answer is ["Paris"] as requested.')
    assert parsed.ok and parsed.items == ["Paris"]
    assert "text before list" in parsed.repairs and "text after list" in parsed.repairs


def test_truncated_list_keeps_complete_items():
    parsed = parse_student_reply('["Paris", "London", "Ber')
    assert parsed.ok and parsed.items == ["Paris", "London"]
    assert "truncated list" in parsed.repairs
    parsed = parse_student_reply('["Paris", "London",')
    assert parsed.items == ["Paris", "London"]


def test_single_quotes_and_escapes():
    parsed = parse_student_reply("['Paris', 'New York']")
    assert parsed.items == ["Paris", "New York"] and "python literal" in parsed.repairs
    assert parse_student_reply('["O\\"Brien", "it\'s"]').items == ['O"Brien', "it's"]
    assert parse_student_reply('["[bracket] inside"]').items == ["[bracket] inside"]


def test_nested_and_non_string_items():
    parsed = parse_student_reply('[["Paris", "France"], "Rome", 1984, null, true, {"a": 1}, ""]')
    assert parsed.items == ["Paris", "France", "Rome", "1984"]
    assert parsed.dropped == 4
    assert "nested list" in parsed.repairs


def test_duplicates_kept_once_in_order():
    assert parse_student_reply('["b", "a", "b", " a "]').items == ["b", "a"]


def test_stop_marker_ends_the_reply():
    parsed = parse_student_reply('["Paris"]</s>USER: What describes x? ASSISTANT: ["y"]')
    assert parsed.items == ["Paris"] and parsed.repairs == []


def test_reply_size_is_bounded():
    parsed = parse_student_reply('["a"' + ', "a"' * 500_000 + "]")
    assert not parsed.ok and "longer than" in parsed.error


def test_teacher_tuples():
    reply = '[("Ada Lovelace", "person"), ("London", "city"), ("x",), ("London", "city"), 5]'
    parsed = parse_teacher_reply(reply)
    assert parsed.ok
    assert parsed.items == [("Ada Lovelace", "person"), ("London", "city")]
    assert parsed.dropped == 2


def test_teacher_truncated_and_prose():
    parsed = parse_teacher_reply('Here you go: [("A", "x"), ("B", "y"), ("C", "z')
    assert parsed.items == [("A", "x"), ("B", "y")]
    assert {"text before list", "truncated list"} <= set(parsed.repairs)


def test_parser_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    reply = f'[__import__("pathlib").Path("{marker}").touch()]'
    parsed = parse_student_reply(reply)
    assert not parsed.ok
    assert not marker.exists()


@pytest.mark.parametrize(
    "text,expected",
    [
        ('["a", "b", "a",', True),
        ('["a", "b",', False),
        ('["a", "a"', False),  # the second item is not finished yet
        ('say "a", "a", then [', False),  # items before the list do not count
        ('["a\\"b", "a\\"b",', True),
        ('["New York", "New York City", "New York",', True),
    ],
)
def test_list_repeats(text, expected):
    from spacy_uniner.parsing import list_repeats

    assert list_repeats(text) is expected
    if expected:  # what is kept reads as the list without the repeat
        assert parse_student_reply(text).items == list(dict.fromkeys(parse_student_reply(text).items))
