from collections import Counter

from spacy_uniner.teacher.stats import estimate_cost, format_summary, head_tail_table


def test_head_tail_bands_and_shares():
    counts = Counter({f"t{i}": 1 for i in range(200)})
    counts["person"] = 300
    counts["location"] = 100
    rows = head_tail_table(counts)
    assert [r["band"] for r in rows] == ["top 1%", "1-10%", "10-100%"]
    # 202 types: top 1% = 3 types, 1-10% = next 18, the rest 181.
    assert [r["types"] for r in rows] == [3, 18, 181]
    assert rows[0]["examples"][:2] == ["person", "location"]
    assert rows[0]["mentions"] == 401
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-3


def test_empty_and_cost():
    assert [r["types"] for r in head_tail_table(Counter())] == [0, 0, 0]
    assert estimate_cost(1_000_000, 1_000_000, 0.5, 1.5) == 2.0


def test_summary_mentions_every_part():
    stats = {
        "teacher": "t",
        "prompt_version": "v",
        "out": "o",
        "errors_file": "e",
        "passages": 2,
        "entities": 3,
        "passages_with_entities": 1,
        "distinct_types": 2,
        "dropped": {"else_type": 1},
        "repaired_replies": 0,
        "head_tail": head_tail_table(Counter({"a": 2, "b": 1})),
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "estimated_cost_usd": 0.0,
        "price_per_million": [0.5, 1.5],
        "run": {
            "sampled": 2,
            "failed": 0,
            "cache_hits": 0,
            "calls": 2,
            "attempts": 3,
            "retries": 1,
            "estimated_cost_usd": 0.0,
            "seconds": 1.0,
            "ask_seconds": 0.5,
            "calls_per_minute": 240,
        },
    }
    text = format_summary(stats)
    for part in ("top 1%", "1-10%", "10-100%", "else_type 1", "estimated cost", "API calls 2"):
        assert part in text
