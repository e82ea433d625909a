"""Raw access to a store's tables, behind the driver's back: what tests tamper with and inspect.

Both drivers share the table names and columns (`content`, `owners`), so each helper is one
query per driver.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import asyncpg

from agentkeel.store import sqlite_path


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


async def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) on the store's database; return its rows."""
    if _is_sqlite(url):
        with closing(sqlite3.connect(sqlite_path(url))) as db, db:
            return [tuple(row) for row in db.execute(sql, args).fetchall()]
    numbered = sql
    for n in range(1, len(args) + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(numbered, *args)]
    finally:
        await conn.close()


async def rows(url: str) -> list[tuple[str, str, bytes]]:
    """Every content row: (ref, encoding, stored bytes)."""
    return [(r, e, bytes(d)) for r, e, d in await query(url, "SELECT ref, encoding, data FROM content")]


async def set_data(url: str, ref: str, data: bytes) -> None:
    """Overwrite the stored bytes of `ref` (a tampering attacker, or a damaged disk)."""
    await query(url, "UPDATE content SET data = ? WHERE ref = ?", data, ref)


async def backdate(url: str, seconds: float) -> None:
    """Make every content and owner row `seconds` older, as if written that long ago."""
    for table in ("content", "owners"):
        await query(url, f"UPDATE {table} SET created_at = created_at - ?", seconds)


async def owner_rows(url: str) -> set[tuple[str, str]]:
    """Every (owner, ref) pair recorded."""
    return {(o, r) for o, r in await query(url, "SELECT owner, ref FROM owners")}
