"""The embedded store driver: one SQLite file in WAL mode (default `<home>/store.db`).

One connection per store object, used from worker threads through
`asyncio.to_thread` so the event loop never waits on the disk, and serialised
by a lock because a `sqlite3` connection must not run two statements at once.
Several processes (workers on one host, `keel` commands) may open the same
file: WAL lets readers run beside the one writer, and writes are idempotent
(`INSERT OR IGNORE` on the reference). `gc` runs in one `BEGIN IMMEDIATE`
transaction, so no write lands between its two deletes.
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
    GcReport,
    StoreError,
    StoreStats,
    check_owner,
    check_ref,
    open_rows,
    ref_of,
    unique,
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
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, ref)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_by_ref ON owners (ref);
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
        self.sealer = sealer or Sealer(None)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            _retry_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            # NORMAL in WAL mode is durable against process crashes, which is what a retried activity needs.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            _retry_locked(lambda: self._conn.executescript(_SCHEMA))
        except (OSError, sqlite3.Error) as exc:
            if self._db is not None:
                self._db.close()
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._conn)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:  # a full disk, a lock held too long: callers catch one type
            raise StoreError(f"the SQLite store {self.path} failed: {exc}") from exc

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Store each item once and record `owner` for it; return the references in order."""
        owner = check_owner(owner)
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
        owned = [(owner, ref, now) for ref in rows] if owner is not None else []

        def write(db: sqlite3.Connection) -> None:
            # One transaction per batch: one fsync-equivalent for a whole turn's messages, and the
            # owner rows land with their content (an owner row always has its content).
            _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO content (ref, encoding, data, size, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    list(rows.values()),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO owners (owner, ref, created_at) VALUES (?, ?, ?)", owned
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
        return open_rows(refs, found, self.sealer, f"the store {self.path}")

    async def exists(self, ref: str) -> bool:
        """Whether `ref` is stored."""
        check_ref(ref)
        row = await self._run(lambda db: db.execute("SELECT 1 FROM content WHERE ref = ?", (ref,)).fetchone())
        return row is not None

    async def stats(self) -> StoreStats:
        """Contents, their plaintext bytes, and distinct owners."""

        def read(db: sqlite3.Connection) -> StoreStats:
            contents, size = db.execute("SELECT COUNT(*), TOTAL(size) FROM content").fetchone()
            (owners,) = db.execute("SELECT COUNT(DISTINCT owner) FROM owners").fetchone()
            return StoreStats(contents=int(contents), bytes=int(size), owners=int(owners))

        return await self._run(read)

    async def owners(self) -> set[str]:
        """Every owner with at least one content."""
        rows = await self._run(lambda db: db.execute("SELECT DISTINCT owner FROM owners").fetchall())
        return {owner for (owner,) in rows}

    async def gc(self, retained: set[str], *, created_before: float, dry_run: bool = False) -> GcReport:
        """Forget owners not in `retained`, delete content no owner needs (see `ContentStore.gc`)."""

        def collect(db: sqlite3.Connection) -> GcReport:
            _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                report = _collect(db, retained, created_before, dry_run)
                # A dry run does the same deletes and rolls them back: its figures cannot drift.
                db.execute("ROLLBACK" if dry_run else "COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return report

        return await self._run(collect)

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""

        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)


_UNOWNED = "content.created_at < ? AND NOT EXISTS (SELECT 1 FROM owners o WHERE o.ref = content.ref)"
"""Content that no owner needs and that is older than the grace period."""


def _collect(db: sqlite3.Connection, retained: set[str], cutoff: float, dry_run: bool) -> GcReport:
    """The two deletes of a gc, inside the caller's transaction."""
    candidates = db.execute("SELECT owner FROM owners GROUP BY owner HAVING MIN(created_at) < ?", (cutoff,))
    doomed = [(owner,) for (owner,) in candidates.fetchall() if owner not in retained]
    db.executemany("DELETE FROM owners WHERE owner = ?", doomed)
    query = f"SELECT COUNT(*), TOTAL(size) FROM content WHERE {_UNOWNED}"
    count, size = db.execute(query, (cutoff,)).fetchone()
    db.execute(f"DELETE FROM content WHERE {_UNOWNED}", (cutoff,))
    return GcReport(
        owners_removed=len(doomed), contents_removed=int(count), bytes_reclaimed=int(size), dry_run=dry_run
    )
