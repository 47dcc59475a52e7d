"""A ready pipeline: a blank spaCy pipeline with ``universal_ner`` over an HFStudent.

What ``uniner extract`` and ``ray_jobs.extract`` (``--model``) run; in Python,
``nlp.add_pipe("universal_ner", config=...)`` does the same with every setting.
"""

from typing import Any, List, Optional


def build_pipeline(
    labels: List[str],
    model: str = "default",
    lang: str = "en",
    threads: Optional[int] = None,
    max_new_tokens: int = 96,
    store_replies: bool = False,
    adapter: Optional[str] = None,
    device: str = "cpu",
    batch_size: int = 16,
    allow_download: bool = False,
) -> Any:
    """A blank ``lang`` pipeline with ``universal_ner`` over an HFStudent (weights load lazily)."""
    import spacy

    for name, value in (("threads", threads), ("batch_size", batch_size),
                        ("max_new_tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")

    nlp = spacy.blank(lang)
    nlp.add_pipe(
        "universal_ner",
        config={
            "labels": labels,
            "model": {
                "@uniner_models": "spacy_uniner.HFStudent.v2",
                "name": model,
                "threads": threads,
                "max_new_tokens": max_new_tokens,
                "adapter": adapter,
                "device": device,
                "batch_size": batch_size,
                "allow_download": allow_download,
            },
            "store_replies": store_replies,
        },
    )
    return nlp
