"""A bounded in-memory LRU cache of verified content, in front of any store driver.

A content reference names exactly one content, so cached entries never go stale:
the only invalidation is `delete_unreferenced`. Workers read the same
conversation prefix turn after turn; the cache makes those reads memory reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from agentkeel.store.base import ContentStore, check_ref, unique

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""Default bound: 64 MiB of plaintext per worker process."""


class CachedStore(ContentStore):
    """An LRU cache, bounded by the bytes of content it holds, around `inner`.

    Args:
        inner: The driver; it owns verification and encryption, the cache holds verified plaintext.
        max_bytes: Bound on the cached content's bytes; 0 disables caching. An item bigger
            than the bound is never cached.
    """

    def __init__(self, inner: ContentStore, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.inner = inner
        self.max_bytes = max_bytes
        self.current_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ref: object) -> bool:
        return ref in self._entries

    def _remember(self, ref: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        if ref in self._entries:
            self._entries.move_to_end(ref)
            return
        self._entries[ref] = data
        self.current_bytes += len(data)
        while self.current_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.current_bytes -= len(evicted)

    def _forget(self, ref: str) -> None:
        data = self._entries.pop(ref, None)
        if data is not None:
            self.current_bytes -= len(data)

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Write through to `inner`, then cache what was written (it is about to be read)."""
        refs = await self.inner.put_many(items, owner=owner)
        for ref, item in zip(refs, items, strict=True):
            self._remember(ref, bytes(item))
        return refs

    async def get_many(self, refs: Sequence[str]) -> list[bytes]:
        """Serve cached references, fetch the rest from `inner` in one batch."""
        found: dict[str, bytes] = {}
        for ref in unique(refs):
            data = self._entries.get(check_ref(ref))
            if data is not None:
                self._entries.move_to_end(ref)
                found[ref] = data
        missing = [ref for ref in unique(refs) if ref not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            for ref, data in zip(missing, await self.inner.get_many(missing), strict=True):
                found[ref] = data
                self._remember(ref, data)
        return [found[ref] for ref in refs]

    async def exists(self, ref: str) -> bool:
        """Cached references exist; otherwise ask `inner`."""
        return check_ref(ref) in self._entries or await self.inner.exists(ref)

    async def delete_unreferenced(self, keep: set[str], *, created_before: float | None = None) -> int:
        """Delete in `inner`, and drop every cached entry that may have gone with it."""
        deleted = await self.inner.delete_unreferenced(keep, created_before=created_before)
        for ref in [ref for ref in self._entries if ref not in keep]:
            self._forget(ref)
        return deleted

    def clear(self) -> None:
        """Empty the cache."""
        self._entries.clear()
        self.current_bytes = 0

    async def aclose(self) -> None:
        """Close `inner` and drop the cache."""
        self.clear()
        await self.inner.aclose()
