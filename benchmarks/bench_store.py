"""How much the conversation store holds, for the long-conversation benchmark.

The store (`agentkeel.store`, issue 13) may be missing or unused by the code under
test: every function here then answers None ("n/a"), so one benchmark script measures
the code before and after the store. It never creates a store: a SQLite store is read
only when its file exists, and through a read-only connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any


def _store_module() -> Any | None:
    try:
        from agentkeel import store
    except ImportError:
        return None
    return store


def store_file(home: Path) -> Path | None:
    """The SQLite file the workers' store lives in (None: no store module, or not a SQLite store)."""
    store = _store_module()
    if store is None:
        return None
    url = os.environ.get(getattr(store, "ENV_STORE_URL", "KEEL_STORE_URL"), "").strip()
    if url:
        if not url.lower().startswith("sqlite"):
            return None
        with contextlib.suppress(Exception):
            return Path(store.sqlite_path(url))
        return None
    return home / getattr(store, "DEFAULT_STORE_FILE", "store.db")


def _sqlite_counts(path: Path) -> dict[str, Any]:
    """Objects and bytes in the store's `content` table, and the file's size with its WAL."""
    out: dict[str, Any] = {
        "file_bytes": sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    }
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            objects, plain, stored = db.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(length(data)), 0) FROM content"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        out["error"] = f"cannot read {path}: {exc}"
        return out
    out.update(objects=int(objects), plain_bytes=int(plain), stored_bytes=int(stored))
    return out


async def _driver_stats(home: Path) -> Any | None:
    """What the store's own `stats()` says, when the driver has one (its shape is the driver's)."""
    store = _store_module()
    if store is None or not hasattr(store, "open_store"):
        return None
    from agentkeel.settings import Settings

    try:
        opened = store.open_store(Settings(home=home), cache_bytes=0)
    except Exception as exc:  # a store that cannot be opened is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        stats = getattr(opened, "stats", None)
        if stats is None:
            return None
        value = await stats()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return value if isinstance(value, dict | int | float | str) else repr(value)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            await opened.aclose()


async def store_figures(home: Path) -> dict[str, Any] | None:
    """Objects and bytes the store holds now, or None when the code under test keeps no store.

    Args:
        home: The workers' `Settings.home` (where the default SQLite store lives).
    """
    path = store_file(home)
    if path is None:
        if _store_module() is None or not os.environ.get("KEEL_STORE_URL"):
            return None
        stats = await _driver_stats(home)
        return {"driver_stats": stats} if stats is not None else None
    if not path.exists():
        return None
    out = _sqlite_counts(path)
    stats = await _driver_stats(home)
    if stats is not None:
        out["driver_stats"] = stats
    return out
