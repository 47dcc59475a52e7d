"""The disk cache of teacher replies.

SQLite, keyed by (teacher model, prompt fingerprint, passage hash).

Each reply is committed as soon as it arrives, so a run that is killed keeps
every answer it paid for and the next run asks only for the rest. Only
successful replies are stored; failures go to the run's errors file and are
asked again next time. Raw replies and token usage are kept; credentials never
reach the cache (nothing but the reply body and usage is stored).
"""

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt_fingerprint TEXT NOT NULL,
    passage_hash TEXT NOT NULL,
    reply TEXT NOT NULL,
    usage TEXT NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
)
"""


def cache_key(model: str, prompt_fingerprint: str, passage_hash: str) -> str:
    raw = "\x00".join((model, prompt_fingerprint, passage_hash))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class ReplyCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> Dict[str, dict]:
        keys = list(keys)
        found: Dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, reply, usage, finish_reason FROM replies WHERE key IN ({marks})",
                chunk,
            )
            for key, reply, usage, finish_reason in rows:
                found[key] = {
                    "reply": reply,
                    "usage": json.loads(usage),
                    "finish_reason": finish_reason,
                }
        return found

    def put(
        self,
        key: str,
        model: str,
        prompt_fingerprint: str,
        passage_hash: str,
        reply: str,
        usage: Dict[str, int],
        finish_reason: Optional[str] = None,
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                model,
                prompt_fingerprint,
                passage_hash,
                reply,
                json.dumps(usage),
                finish_reason,
                time.time(),
            ),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()
