"""The conversation store: content-addressed messages and conversation chains (issue 13).

`open_store(settings)` returns the configured driver behind a bounded LRU cache:

- `sqlite:///<path>` (the default, `<settings.home>/store.db`): the embedded driver.
  As in SQLAlchemy, `sqlite:///rel/store.db` is relative to the working directory and
  `sqlite:////abs/store.db` is absolute.
- `postgresql://...`: for clusters; not available yet.

The URL comes from the `url` argument, else `KEEL_STORE_URL`. With `KEEL_ENCRYPTION_KEY`
set (or `settings.encryption_key`), content is encrypted at rest with the payload keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from agentkeel.settings import Settings
from agentkeel.store.base import (
    ContentStore,
    CorruptContentError,
    InvalidRefError,
    MissingContentError,
    StoreConfigError,
    StoreError,
    StoreKeyError,
    canonical_json,
    ref_of,
)
from agentkeel.store.cache import DEFAULT_CACHE_BYTES, CachedStore
from agentkeel.store.chain import ConversationChain
from agentkeel.store.sealing import Sealer
from agentkeel.store.sqlite import SqliteStore

ENV_STORE_URL = "KEEL_STORE_URL"
"""The store's URL; `sqlite:///<home>/store.db` when unset."""
DEFAULT_STORE_FILE = "store.db"

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ENV_STORE_URL",
    "CachedStore",
    "ContentStore",
    "ConversationChain",
    "CorruptContentError",
    "InvalidRefError",
    "MissingContentError",
    "Sealer",
    "SqliteStore",
    "StoreConfigError",
    "StoreError",
    "StoreKeyError",
    "canonical_json",
    "open_store",
    "ref_of",
    "sqlite_path",
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


def open_store(
    settings: Settings,
    url: str | None = None,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    env: Mapping[str, str] | None = None,
) -> ContentStore:
    """Open the configured store behind a bounded cache.

    Args:
        settings: Where `home` (for the default file) and the encryption key come from.
        url: The store URL; default `KEEL_STORE_URL`, else `sqlite:///<home>/store.db`.
        cache_bytes: Bound of the in-memory cache; 0 disables it.
        env: Environment for `KEEL_STORE_URL` and the old keys (default `os.environ`).

    Raises:
        StoreConfigError: the URL is invalid or names a driver that is not available.
        agentkeel.codec.CodecConfigError: an encryption key is invalid.
    """
    env = os.environ if env is None else env
    url = (url or env.get(ENV_STORE_URL, "")).strip()
    scheme = urlsplit(url).scheme.lower() if url else "sqlite"
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise StoreConfigError(
            "the PostgreSQL store driver is not available yet (issue 13 item 2); "
            f"use the embedded default (unset {ENV_STORE_URL}) or a sqlite:/// URL"
        )
    if scheme != "sqlite":
        raise StoreConfigError(f"unknown store URL scheme {scheme!r} in {url!r}: use sqlite:///path")
    path = sqlite_path(url) if url else settings.home / DEFAULT_STORE_FILE
    secret = settings.encryption_key
    sealer = Sealer.from_env(env, key=secret.get_secret_value() if secret is not None else "")
    driver = SqliteStore(path, sealer)
    return CachedStore(driver, cache_bytes) if cache_bytes > 0 else driver
