from spacy_uniner.teacher.cache import ReplyCache, cache_key


def test_cache_round_trip_and_keys(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ReplyCache(path)
    key = cache_key("gpt", "fp1", "h1")
    assert key != cache_key("gpt", "fp2", "h1") != cache_key("other", "fp1", "h1")
    cache.put(key, "gpt", "fp1", "h1", '[("a", "b")]', {"prompt_tokens": 3}, "stop")
    cache.close()
    again = ReplyCache(path)  # committed: visible to a new process
    assert again.get_many([key, "missing"]) == {
        key: {"reply": '[("a", "b")]', "usage": {"prompt_tokens": 3}, "finish_reason": "stop"}
    }
    assert len(again) == 1
    again.close()
