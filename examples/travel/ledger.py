"""An append-only SQLite ledger, keyed by idempotency key: the example tools' side effects.

Each forward action writes one row under its idempotency key; each reversal
writes one row under `<key>#undo` that points at the original. `INSERT OR
IGNORE` on the unique key makes both safe to run twice, so a retried or
re-delivered activity never books or refunds twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    workflow_id TEXT NOT NULL,
    action TEXT NOT NULL,
    ref TEXT NOT NULL,
    amount_usd REAL NOT NULL DEFAULT 0,
    reverses TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_workflow ON ledger (workflow_id, seq);
"""
UNDO_SUFFIX = "#undo"


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row."""

    seq: int
    idempotency_key: str
    workflow_id: str
    action: str
    ref: str
    amount_usd: float
    reverses: str | None
    details: dict[str, Any]
    at: float


def _retry_busy(op: Callable[[], object], within: float = 30.0) -> None:
    """Run `op`, retrying while the file is locked.

    Workers that start together on a new ledger race to switch it to WAL and create the
    schema; SQLite answers "database is locked" at once for that switch instead of waiting
    in its busy handler, so the wait happens here.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Ledger:
    """The ledger file. Thread-safe: activities call it through `asyncio.to_thread`."""

    def __init__(self, path: str | Path) -> None:
        """Open (and create) the ledger at `path`."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        _retry_busy(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute("PRAGMA synchronous=NORMAL")
        _retry_busy(lambda: self._db.executescript(_SCHEMA))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def record(
        self,
        key: str,
        *,
        workflow_id: str,
        action: str,
        ref: str,
        amount_usd: float = 0.0,
        reverses: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> tuple[LedgerEntry, bool]:
        """Write the entry for `key` unless it exists.

        Returns:
            The entry stored under `key`, and whether this call created it.
        """
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO ledger (idempotency_key, workflow_id, action, ref, amount_usd,"
                " reverses, details, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, workflow_id, action, ref, amount_usd, reverses, json.dumps(details or {}), time.time()),
            )
            created = cur.rowcount == 1
            entry = self._get(key)
        assert entry is not None
        return entry, created

    def get(self, key: str) -> LedgerEntry | None:
        """The entry stored under `key`, if any."""
        with self._lock:
            return self._get(key)

    def reverse(self, key: str, *, action: str) -> tuple[LedgerEntry | None, bool]:
        """Write the reversal of the entry under `key`, once.

        Returns:
            The reversal entry (None when `key` never did anything), and whether this call created it.
        """
        original = self.get(key)
        if original is None:
            return None, False
        return self.record(
            key + UNDO_SUFFIX,
            workflow_id=original.workflow_id,
            action=action,
            ref=original.ref,
            amount_usd=-original.amount_usd,
            reverses=key,
        )

    def entries(self, workflow_id: str | None = None) -> list[LedgerEntry]:
        """Entries in the order they were written, optionally for one run."""
        query = "SELECT * FROM ledger"
        args: tuple[Any, ...] = ()
        if workflow_id is not None:
            query += " WHERE workflow_id = ?"
            args = (workflow_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [self._entry(r) for r in rows]

    def _get(self, key: str) -> LedgerEntry | None:
        row = self._db.execute("SELECT * FROM ledger WHERE idempotency_key = ?", (key,)).fetchone()
        return self._entry(row) if row else None

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> LedgerEntry:
        seq, key, wid, action, ref, amount, reverses, details, at = row
        return LedgerEntry(seq, key, wid, action, ref, amount, reverses, json.loads(details), at)
