"""A bounded in-memory LRU cache of verified content, in front of any store driver.

A content reference names exactly one content, so cached entries never go stale:
the only invalidation is `gc`. Workers read the same conversation prefix turn
after turn; the cache makes those reads memory reads.

Writes always reach the driver, cached or not: the driver records who owns the
content, and another process's gc may have deleted content this cache still
holds. The one write the cache skips is an `(owner, ref)` pair it has already
recorded: while that owner is retained, gc keeps both its owner row and the
content.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from agentkeel.store.base import ContentStore, GcReport, StoreStats, check_owner, check_ref, ref_of, unique

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""Default bound: 64 MiB of plaintext per worker process."""
DEFAULT_OWNED_PAIRS = 16_384
"""Default bound on the `(owner, ref)` pairs remembered as recorded (about 3 MiB)."""


class CachedStore(ContentStore):
    """An LRU cache, bounded by the bytes of content it holds, around `inner`.

    Args:
        inner: The driver; it owns verification and encryption, the cache holds verified plaintext.
        max_bytes: Bound on the cached content's bytes; 0 disables caching. An item bigger
            than the bound is never cached.
        max_owned_pairs: Bound on the `(owner, ref)` pairs remembered as recorded in `inner`.
    """

    def __init__(
        self,
        inner: ContentStore,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        max_owned_pairs: int = DEFAULT_OWNED_PAIRS,
    ) -> None:
        if max_bytes < 0 or max_owned_pairs < 0:
            raise ValueError(f"bounds must be >= 0, got {max_bytes} bytes and {max_owned_pairs} pairs")
        self.inner = inner
        self.max_bytes = max_bytes
        self.max_owned_pairs = max_owned_pairs
        self.current_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._owned: OrderedDict[tuple[str, str], None] = OrderedDict()

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

    def _owned_already(self, owner: str | None, ref: str) -> bool:
        if owner is None or (owner, ref) not in self._owned:
            return False
        self._owned.move_to_end((owner, ref))
        return True

    def _record_owned(self, owner: str, refs: Sequence[str]) -> None:
        for ref in refs:
            self._owned[(owner, ref)] = None
            self._owned.move_to_end((owner, ref))
        while len(self._owned) > self.max_owned_pairs:
            self._owned.popitem(last=False)

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Write through to `inner` (but for pairs already recorded), then cache what was written."""
        owner = check_owner(owner)
        refs = [ref_of(bytes(item)) for item in items]
        todo = [item for ref, item in zip(refs, items, strict=True) if not self._owned_already(owner, ref)]
        if todo:
            written = await self.inner.put_many(todo, owner=owner)
            if owner is not None:
                self._record_owned(owner, written)
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
        """Cached references exist; otherwise ask `inner`. (Content another process's gc deleted stays
        readable here while cached: it is still the right content.)"""
        return check_ref(ref) in self._entries or await self.inner.exists(ref)

    async def stats(self) -> StoreStats:
        """The figures of `inner`."""
        return await self.inner.stats()

    async def owners(self) -> set[str]:
        """The owners recorded in `inner`."""
        return await self.inner.owners()

    async def gc(self, retained: set[str], *, created_before: float, dry_run: bool = False) -> GcReport:
        """Collect in `inner`, then forget everything cached: any of it may have gone."""
        report = await self.inner.gc(retained, created_before=created_before, dry_run=dry_run)
        if not dry_run:
            self.clear()
        return report

    def clear(self) -> None:
        """Empty the cache and forget which owners were recorded."""
        self._entries.clear()
        self._owned.clear()
        self.current_bytes = 0

    async def aclose(self) -> None:
        """Close `inner` and drop the cache."""
        self.clear()
        await self.inner.aclose()
