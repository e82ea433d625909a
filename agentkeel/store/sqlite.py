"""The embedded store driver: one SQLite file in WAL mode (default `<home>/store.db`).

One connection per store object, used from worker threads through
`asyncio.to_thread` so the event loop never waits on the disk, and serialised
by a lock because a `sqlite3` connection must not run two statements at once.
Several processes (workers on one host, `keel` commands) may open the same
file: WAL lets readers run beside the one writer, and writes are idempotent
(`INSERT OR IGNORE` on the reference).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from agentkeel.store.base import (
    ContentStore,
    MissingContentError,
    StoreError,
    check_ref,
    ref_of,
    unique,
    verify,
)
from agentkeel.store.sealing import Sealer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    ref TEXT PRIMARY KEY,
    encoding TEXT NOT NULL,
    data BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""
BUSY_TIMEOUT_S = 30.0
"""How long a statement waits for another process's write lock before failing."""
_QUERY_CHUNK = 500
"""References per `IN (...)` query: below SQLite's host-parameter limit on every build."""

T = TypeVar("T")


def _retry_locked(op: Callable[[], T], within: float = BUSY_TIMEOUT_S) -> T:
    """Run `op`, retrying while the file is locked.

    Processes opening a new file together race to switch it to WAL and create the
    schema; SQLite answers "database is locked" at once for that switch instead of
    waiting in its busy handler, so the wait happens here (as the example ledger does).
    """
    deadline = time.monotonic() + within
    while True:
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SqliteStore(ContentStore):
    """Content in a SQLite file.

    Args:
        path: The database file; its folder is created.
        sealer: Encryption at rest; None (or a sealer without a key) stores plaintext.
    """

    def __init__(self, path: str | Path, sealer: Sealer | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sealer = sealer or Sealer(None)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        _retry_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
        # NORMAL in WAL mode is durable against process crashes, which is what a retried activity needs.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        _retry_locked(lambda: self._conn.executescript(_SCHEMA))

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._conn)

        return await asyncio.to_thread(locked)

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Store each item once; return the references in order."""
        refs = [ref_of(bytes(item)) for item in items]
        # Seal outside the lock and the thread: AES-GCM on small messages is microseconds.
        rows: dict[str, tuple[str, str, bytes, int, float]] = {}
        now = time.time()
        for ref, item in zip(refs, items, strict=True):
            if ref not in rows:
                encoding, stored = self.sealer.seal(bytes(item))
                rows[ref] = (ref, encoding, stored, len(item), now)
        if not rows:
            return refs

        def write(db: sqlite3.Connection) -> None:
            # One transaction per batch: one fsync-equivalent for a whole turn's messages.
            _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO content (ref, encoding, data, size, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    list(rows.values()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(write)
        return refs

    async def get_many(self, refs: Sequence[str]) -> list[bytes]:
        """The verified content of each reference, in order (errors as `ContentStore.get_many`)."""
        wanted = unique(check_ref(ref) for ref in refs)

        def read(db: sqlite3.Connection) -> dict[str, tuple[str, bytes]]:
            found: dict[str, tuple[str, bytes]] = {}
            for start in range(0, len(wanted), _QUERY_CHUNK):
                chunk = wanted[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                for ref, encoding, data in db.execute(
                    f"SELECT ref, encoding, data FROM content WHERE ref IN ({marks})", chunk
                ):
                    found[ref] = (encoding, bytes(data))
            return found

        found = await self._run(read) if wanted else {}
        plain: dict[str, bytes] = {}
        for ref in wanted:
            if ref not in found:
                raise MissingContentError(f"content {ref} is not in the store {self.path}")
            encoding, stored = found[ref]
            plain[ref] = verify(ref, self.sealer.open(ref, encoding, stored))
        return [plain[ref] for ref in refs]

    async def exists(self, ref: str) -> bool:
        """Whether `ref` is stored."""
        check_ref(ref)
        row = await self._run(lambda db: db.execute("SELECT 1 FROM content WHERE ref = ?", (ref,)).fetchone())
        return row is not None

    async def delete_unreferenced(self, keep: set[str], *, created_before: float | None = None) -> int:
        """Delete content not in `keep` (and older than `created_before`, when given); return the count."""
        keep_rows = [(check_ref(ref),) for ref in keep]
        cutoff = float("inf") if created_before is None else created_before

        def delete(db: sqlite3.Connection) -> int:
            _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                # A temporary table, not `NOT IN (?, ...)`: `keep` can hold millions of references.
                db.execute("CREATE TEMP TABLE IF NOT EXISTS gc_keep (ref TEXT PRIMARY KEY) WITHOUT ROWID")
                db.execute("DELETE FROM gc_keep")
                db.executemany("INSERT OR IGNORE INTO gc_keep (ref) VALUES (?)", keep_rows)
                cur = db.execute(
                    "DELETE FROM content WHERE created_at < ? AND ref NOT IN (SELECT ref FROM gc_keep)",
                    (cutoff,),
                )
                db.execute("DELETE FROM gc_keep")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return cur.rowcount

        return await self._run(delete)

    async def count(self) -> tuple[int, int]:
        """How many contents are stored and their plaintext bytes in all (for `keel store` and tests)."""
        row = await self._run(lambda db: db.execute("SELECT COUNT(*), TOTAL(size) FROM content").fetchone())
        return int(row[0]), int(row[1])

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""

        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
