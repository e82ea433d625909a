"""The cluster store driver: PostgreSQL through asyncpg (`postgresql://user:password@host/db`).

Workers on many hosts share one database. The pool is made on first use (so
`open_store` stays synchronous and a worker that never touches the store never
connects), bounded, and the schema (`postgres_schema.sql`, the file
`temporal-dev.yml` applies too) is created then, under an advisory lock, so
workers starting together do not race on `CREATE TABLE IF NOT EXISTS`.

Writes are idempotent (`ON CONFLICT DO NOTHING`) and take a shared advisory lock
that `gc` takes exclusively: a gc never runs between a writer finding a content
already stored and recording its owner, so an owner row always has its content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

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

SCHEMA_FILE = Path(__file__).with_name("postgres_schema.sql")
"""The schema, in one place: applied here on first use and by `temporal-dev.yml`."""
POOL_MAX = 10
"""Connections per store object (per worker process): enough for its concurrent activities,
few enough that many workers stay under PostgreSQL's `max_connections` (100 by default)."""
CONNECT_TIMEOUT_S = 10.0
"""How long opening a connection may take before the store reports the database unreachable."""
_DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What a lost connection, a refused login or a failed statement raise; callers see a `StoreError`."""
_SCHEMA_LOCK = 0x6B65656C_0001
"""Advisory lock key ('keel', 1) held while the schema is created."""
_GC_LOCK = 0x6B65656C_0002
"""Advisory lock key ('keel', 2): shared by writers, exclusive for gc."""

_INSERT = """
WITH new_content AS (
    INSERT INTO content (ref, encoding, data, size, created_at)
    SELECT r, e, d, s, $5 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[]) AS t(r, e, d, s)
    ON CONFLICT (ref) DO NOTHING
)
INSERT INTO owners (owner, ref, created_at)
SELECT $6::text, r, $5 FROM unnest($1::text[]) AS t(r) WHERE $6::text IS NOT NULL
ON CONFLICT (owner, ref) DO NOTHING
"""
_DELETE_UNOWNED = """
WITH gone AS (
    DELETE FROM content c
    WHERE c.created_at < $1 AND NOT EXISTS (SELECT 1 FROM owners o WHERE o.ref = c.ref)
    RETURNING c.size
)
SELECT count(*), coalesce(sum(size), 0) FROM gone
"""


def asyncpg_dsn(url: str) -> str:
    """`url` as asyncpg reads it: SQLAlchemy's `postgresql+asyncpg://` becomes `postgresql://`."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower().startswith("postgresql+"):
        return f"postgresql://{rest}"
    return url


class PostgresStore(ContentStore):
    """Content in a PostgreSQL database.

    One store object serves one event loop (asyncpg's pool belongs to the loop that made it):
    a worker opens one, a `keel` command another. Behind a transaction-mode pgbouncer, asyncpg's
    prepared statements need `statement_cache_size=0`, which this driver does not set.

    Args:
        url: `postgresql://[user[:password]@][host][:port]/db[?host=/socket/dir&...]`.
        sealer: Encryption at rest; None (or a sealer without a key) stores plaintext.
        max_size: Bound of the connection pool.
    """

    def __init__(self, url: str, sealer: Sealer | None = None, *, max_size: int = POOL_MAX) -> None:
        self.url = url
        self.sealer = sealer or Sealer(None)
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False

    async def _ready(self) -> asyncpg.Pool:
        """The pool, made (and the schema created) on first use."""
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await self._open()
        return self._pool

    async def _open(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                asyncpg_dsn(self.url), min_size=1, max_size=self.max_size, timeout=CONNECT_TIMEOUT_S
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}") from None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(SCHEMA_FILE.read_text())
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _DB_ERRORS):
                raise StoreError(f"cannot create the store's tables: {type(exc).__name__}: {exc}") from None
            raise
        return pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; database failures surface as `StoreError`s (callers catch one type)."""
        pool = await self._ready()
        try:
            async with pool.acquire() as conn:
                yield conn
        except _DB_ERRORS as exc:
            raise StoreError(f"the PostgreSQL store failed: {type(exc).__name__}: {exc}") from exc

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Store each item once and record `owner` for it; return the references in order."""
        owner = check_owner(owner)
        refs = [ref_of(bytes(item)) for item in items]
        rows: dict[str, tuple[str, bytes, int]] = {}
        for ref, item in zip(refs, items, strict=True):
            if ref not in rows:
                rows[ref] = (*self.sealer.seal(bytes(item)), len(item))
        if not rows:
            return refs
        # Sorted, so two writers of overlapping batches lock index entries in one order (no deadlock).
        ordered = sorted(rows)
        columns = (
            ordered,
            [rows[r][0] for r in ordered],
            [rows[r][1] for r in ordered],
            [rows[r][2] for r in ordered],
        )
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _GC_LOCK)
            await conn.execute(_INSERT, *columns, time.time(), owner)
        return refs

    async def get_many(self, refs: Sequence[str]) -> list[bytes]:
        """The verified content of each reference, in order (errors as `ContentStore.get_many`)."""
        wanted = unique(check_ref(ref) for ref in refs)
        found: dict[str, tuple[str, bytes]] = {}
        if wanted:
            async with self._connection() as conn:
                records = await conn.fetch(
                    "SELECT ref, encoding, data FROM content WHERE ref = ANY($1::text[])", wanted
                )
            found = {r["ref"]: (r["encoding"], bytes(r["data"])) for r in records}
        return open_rows(refs, found, self.sealer, "the PostgreSQL store")

    async def exists(self, ref: str) -> bool:
        """Whether `ref` is stored."""
        check_ref(ref)
        async with self._connection() as conn:
            return await conn.fetchval("SELECT 1 FROM content WHERE ref = $1", ref) is not None

    async def stats(self) -> StoreStats:
        """Contents, their plaintext bytes, and distinct owners."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM content), (SELECT coalesce(sum(size), 0) FROM content),"
                " (SELECT count(DISTINCT owner) FROM owners)"
            )
        return StoreStats(contents=int(row[0]), bytes=int(row[1]), owners=int(row[2]))

    async def owners(self) -> set[str]:
        """Every owner with at least one content."""
        async with self._connection() as conn:
            return {r["owner"] for r in await conn.fetch("SELECT DISTINCT owner FROM owners")}

    async def gc(self, retained: set[str], *, created_before: float, dry_run: bool = False) -> GcReport:
        """Forget owners not in `retained`, delete content no owner needs (see `ContentStore.gc`)."""
        async with self._connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                # Waits for writers in flight; new writers wait until this transaction ends.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _GC_LOCK)
                report = await _collect(conn, retained, created_before, dry_run)
            except BaseException:
                await transaction.rollback()
                raise
            # A dry run does the same deletes and rolls them back: its figures cannot drift.
            await (transaction.rollback() if dry_run else transaction.commit())
        return report

    async def aclose(self) -> None:
        """Close the pool (idempotent)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _collect(conn: Any, retained: set[str], cutoff: float, dry_run: bool) -> GcReport:
    """The two deletes of a gc, inside the caller's transaction (`conn`: an asyncpg connection)."""
    candidates = await conn.fetch(
        "SELECT owner FROM owners GROUP BY owner HAVING min(created_at) < $1", cutoff
    )
    doomed = [r["owner"] for r in candidates if r["owner"] not in retained]
    if doomed:
        await conn.execute("DELETE FROM owners WHERE owner = ANY($1::text[])", doomed)
    count, size = await conn.fetchrow(_DELETE_UNOWNED, cutoff)
    return GcReport(
        owners_removed=len(doomed), contents_removed=int(count), bytes_reclaimed=int(size), dry_run=dry_run
    )
