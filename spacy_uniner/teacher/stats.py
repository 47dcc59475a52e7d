"""Statistics of teacher data: counts, the head/tail table of paper Tab. 1, cost."""

import math
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# USD per million tokens (input, output); gpt-3.5-turbo-0125 list price.
DEFAULT_PRICE_IN = 0.50
DEFAULT_PRICE_OUT = 1.50


def head_tail_table(type_counts: Counter, examples: int = 5) -> List[Dict]:
    """Tab. 1: types ranked by mentions, split into the top 1 %, 1–10 % and the rest.

    RETURNS (List[Dict]): one row per band: ``band``, ``types``, ``mentions``,
    ``share`` of all mentions (0–1), ``examples`` (most frequent types).
    """
    ranked = sorted(type_counts.items(), key=lambda item: (-item[1], item[0]))
    total = sum(type_counts.values())
    n = len(ranked)
    top = math.ceil(0.01 * n) if n else 0
    mid = max(top, math.ceil(0.10 * n)) if n else 0
    bands = (("top 1%", 0, top), ("1-10%", top, mid), ("10-100%", mid, n))
    rows = []
    for name, start, end in bands:
        part = ranked[start:end]
        mentions = sum(count for _, count in part)
        rows.append(
            {
                "band": name,
                "types": len(part),
                "mentions": mentions,
                "share": round(mentions / total, 4) if total else 0.0,
                "examples": [label for label, _ in part[:examples]],
            }
        )
    return rows


def estimate_cost(
    prompt_tokens: float,
    completion_tokens: float,
    price_in: float = DEFAULT_PRICE_IN,
    price_out: float = DEFAULT_PRICE_OUT,
) -> float:
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 4)


def entity_stats(rows: Iterable[Dict]) -> Dict:
    """Counts over output rows (each with ``entities`` as (mention, type) pairs)."""
    type_counts: Counter = Counter()
    passages = with_entities = 0
    prompt_tokens = completion_tokens = 0
    for row in rows:
        passages += 1
        entities = row["entities"]
        with_entities += bool(entities)
        type_counts.update(label for _, label in entities)
        prompt_tokens += row["usage"].get("prompt_tokens", 0)
        completion_tokens += row["usage"].get("completion_tokens", 0)
    return {
        "passages": passages,
        "passages_with_entities": with_entities,
        "entities": sum(type_counts.values()),
        "distinct_types": len(type_counts),
        "head_tail": head_tail_table(type_counts),
        "top_types": type_counts.most_common(20),
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def _fmt_pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def format_summary(stats: Dict) -> str:
    """A plain-text summary of ``stats.json`` for the terminal."""
    run = stats["run"]
    lines = [
        f"Teacher {stats['teacher']} · prompt {stats['prompt_version']} · {stats['out']}",
        (
            f"passages: {stats['passages']} annotated of {run['sampled']} sampled "
            f"({run['failed']} failed → {stats['errors_file']}); "
            f"cache hits {run['cache_hits']}, API calls {run['calls']} "
            f"({run['attempts']} HTTP attempts, {run['retries']} retries)"
        ),
        (
            f"entities: {stats['entities']} kept in {stats['passages_with_entities']} passages, "
            f"{stats['distinct_types']} distinct types"
        ),
        "filtered: "
        + (
            ", ".join(f"{reason} {count}" for reason, count in stats["dropped"].items() if count)
            or "nothing"
        )
        + f"; repaired replies {stats['repaired_replies']}",
        "head/tail (paper Tab. 1):",
        f"  {'band':<8} {'types':>6} {'mentions':>9} {'share':>7}  examples",
    ]
    for row in stats["head_tail"]:
        lines.append(
            f"  {row['band']:<8} {row['types']:>6} {row['mentions']:>9} "
            f"{_fmt_pct(row['share']):>7}  " + ", ".join(row["examples"])
        )
    usage = stats["usage"]
    lines.append(
        f"tokens: {usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion; "
        f"estimated cost ${stats['estimated_cost_usd']:.4f} for all rows, "
        f"${run['estimated_cost_usd']:.4f} paid this run "
        f"(at ${stats['price_per_million'][0]}/${stats['price_per_million'][1]} per 1M tokens)"
    )
    corpus = stats.get("corpus", {})
    if corpus.get("messages") or corpus.get("skipped_files"):
        lines.append(
            f"corpus problems: {len(corpus['messages'])} messages "
            f"(+{corpus.get('suppressed_messages', 0)} more), "
            f"skipped files: {len(corpus['skipped_files'])}"
        )
    lines.append(
        f"time: {run['seconds']:.1f} s in all, {run['ask_seconds']:.1f} s asking "
        f"({run['calls_per_minute']:.0f} calls/min)"
    )
    return "\n".join(lines)


def merge_drops(counters: Sequence[Counter], reasons: Tuple[str, ...]) -> Dict[str, int]:
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return {reason: int(total.get(reason, 0)) for reason in reasons}


def pretty_cost(value: Optional[float]) -> str:
    return "unknown" if value is None else f"${value:.4f}"
