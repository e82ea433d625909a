"""The conversation store: content-addressed messages and conversation chains (issue 13).

`open_store(settings)` returns the configured driver behind a bounded LRU cache:

- `sqlite:///<path>` (the default, `<settings.home>/store.db`): the embedded driver.
  As in SQLAlchemy, `sqlite:///rel/store.db` is relative to the working directory and
  `sqlite:////abs/store.db` is absolute.
- `postgresql://user:password@host:port/db` (or `postgres://`): for clusters, through
  asyncpg; the pool opens and the schema is created on first use.

The URL comes from the `url` argument, else `KEEL_STORE_URL`, else `[store] url` in
`keel.toml` (`settings.store.url`). With `KEEL_ENCRYPTION_KEY` set (or
`settings.encryption_key`), content is encrypted at rest with the payload keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agentkeel.settings import Settings
from agentkeel.store.base import (
    ContentStore,
    CorruptContentError,
    GcReport,
    InvalidRefError,
    MissingContentError,
    StoreConfigError,
    StoreError,
    StoreKeyError,
    StoreStats,
    canonical_json,
    ref_of,
)
from agentkeel.store.cache import DEFAULT_CACHE_BYTES, CachedStore
from agentkeel.store.chain import ConversationChain
from agentkeel.store.sealing import Sealer
from agentkeel.store.sqlite import SqliteStore

ENV_STORE_URL = "KEEL_STORE_URL"
"""The store's URL; `[store] url` in `keel.toml`, else `sqlite:///<home>/store.db`, when unset."""
DEFAULT_STORE_FILE = "store.db"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
MIB = 1024 * 1024

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ENV_STORE_URL",
    "CachedStore",
    "ContentStore",
    "ConversationChain",
    "CorruptContentError",
    "GcReport",
    "InvalidRefError",
    "MissingContentError",
    "PostgresStore",
    "Sealer",
    "SqliteStore",
    "StoreConfigError",
    "StoreError",
    "StoreKeyError",
    "StoreStats",
    "canonical_json",
    "masked_url",
    "open_store",
    "ref_of",
    "sqlite_path",
    "store_url",
]


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:///...` URL names.

    Raises:
        StoreConfigError: the URL has a host or no path.
    """
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise StoreConfigError(
            f"a SQLite store URL is sqlite:///relative/path or sqlite:////absolute/path, got {url!r}"
        )
    return Path(parts.path[1:])


def store_url(settings: Settings, url: str | None = None, *, env: Mapping[str, str] | None = None) -> str:
    """The store URL in force: `url`, else `KEEL_STORE_URL`, else `[store] url`, else the SQLite default."""
    return _configured_url(settings, url, env) or f"sqlite:///{settings.home / DEFAULT_STORE_FILE}"


def _configured_url(settings: Settings, url: str | None, env: Mapping[str, str] | None) -> str:
    env = os.environ if env is None else env
    return (url or env.get(ENV_STORE_URL, "") or settings.store.url or "").strip()


def masked_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (for output and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(
    settings: Settings,
    url: str | None = None,
    *,
    cache_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ContentStore:
    """Open the configured store behind a bounded cache. Nothing connects until first use.

    Args:
        settings: Where `home` (for the default file), `[store]` and the encryption key come from.
        url: The store URL; default `KEEL_STORE_URL`, else `[store] url`, else `sqlite:///<home>/store.db`.
        cache_bytes: Bound of the in-memory cache; 0 disables it; None: `[store] cache_mb`.
        env: Environment for `KEEL_STORE_URL` and the old keys (default `os.environ`).

    Raises:
        StoreConfigError: the URL is invalid or names an unknown driver.
        StoreError: the SQLite file cannot be opened (PostgreSQL reports on first use).
        agentkeel.codec.CodecConfigError: an encryption key is invalid.
    """
    env = os.environ if env is None else env
    url = _configured_url(settings, url, env)
    scheme = urlsplit(url).scheme.lower() if url else "sqlite"
    if scheme not in ("sqlite", *POSTGRES_SCHEMES):
        raise StoreConfigError(
            f"unknown store URL scheme {scheme!r} in {masked_url(url)!r}: "
            "use sqlite:///path or postgresql://user:password@host/db"
        )
    # The default file is used as a path, never through a URL (a home with '#' or '?' stays whole).
    path = (sqlite_path(url) if url else settings.home / DEFAULT_STORE_FILE) if scheme == "sqlite" else None
    secret = settings.encryption_key
    sealer = Sealer.from_env(env, key=secret.get_secret_value() if secret is not None else "")
    if path is not None:
        driver: ContentStore = SqliteStore(path, sealer)
    else:
        from agentkeel.store.postgres import PostgresStore  # asyncpg only where PostgreSQL is used

        driver = PostgresStore(url, sealer)
    cache_bytes = settings.store.cache_mb * MIB if cache_bytes is None else cache_bytes
    return CachedStore(driver, cache_bytes) if cache_bytes > 0 else driver


def __getattr__(name: str) -> Any:
    # `PostgresStore` is imported on first use: asyncpg costs every process that never uses it.
    if name == "PostgresStore":
        from agentkeel.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
