"""The conversation store's interface: content addressed by the SHA-256 of canonical bytes.

Every piece of content (a message, a tool schema set, a large tool result, a chain
node) is stored once under its reference `sha256:<hex>`. The reference is the hash
of the *plaintext* bytes, so the same content written twice, by two workers, with
or without encryption, lands on the same row; and every read re-hashes what it
returns, so a corrupted or substituted row is an error, never a wrong message.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from agentkeel.store.sealing import Sealer

REF_PREFIX = "sha256:"
_REF_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class StoreError(Exception):
    """Base of every error the conversation store raises."""


class InvalidRefError(StoreError, ValueError):
    """A string is not a reference of the form `sha256:<64 lowercase hex>`."""


class MissingContentError(StoreError, KeyError):
    """A reference is not in the store (never written, or reclaimed by `gc`)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "missing content"


class CorruptContentError(StoreError):
    """Stored content does not hash to its reference, or failed decryption: tampered with or damaged."""


class StoreKeyError(StoreError):
    """Content was encrypted with a key this process does not hold (or no key is configured)."""


class StoreConfigError(StoreError, ValueError):
    """The store URL or its options are invalid, or the chosen driver is not available."""


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of a JSON value (a message dict): sorted keys, no spaces, UTF-8.

    Two dicts that are equal as JSON give the same bytes, hence the same reference,
    whatever their key order.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ref_of(data: bytes) -> str:
    """The reference of `data`: `sha256:` and the hex SHA-256 of the bytes."""
    return REF_PREFIX + hashlib.sha256(data).hexdigest()


def check_ref(ref: str) -> str:
    """Return `ref` unchanged when it is well formed.

    Raises:
        InvalidRefError: it is not `sha256:<64 lowercase hex>`.
    """
    if not isinstance(ref, str) or not _REF_RE.match(ref):
        raise InvalidRefError(f"not a content reference (expected sha256:<64 hex>): {ref!r:.80}")
    return ref


def verify(ref: str, data: bytes) -> bytes:
    """Return `data` when it hashes to `ref`.

    Raises:
        CorruptContentError: it does not.
    """
    actual = ref_of(data)
    if actual != ref:
        raise CorruptContentError(f"content stored under {ref} hashes to {actual}: it was altered")
    return data


def check_owner(owner: str | None) -> str | None:
    """The owner to record: a workflow id, or None for an empty string (no owner) or None.

    Raises:
        ValueError: it is not a string.
    """
    if owner is not None and not isinstance(owner, str):
        raise ValueError(f"an owner is a workflow id (a string), got {owner!r:.80}")
    return owner or None


@dataclass(frozen=True)
class StoreStats:
    """What a store holds.

    Attributes:
        contents: Stored contents (messages, chain nodes, tool results...).
        bytes: Their plaintext bytes in all (what was written, before encryption).
        owners: Distinct owners (workflow ids) with at least one content recorded.
    """

    contents: int
    bytes: int
    owners: int

    def as_dict(self) -> dict[str, int]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class GcReport:
    """What a `ContentStore.gc` removed (or, with `dry_run`, would remove).

    Attributes:
        owners_removed: Owners forgotten (not retained, first write before the cutoff).
        contents_removed: Contents deleted: no owner left and written before the cutoff.
        bytes_reclaimed: Their plaintext bytes in all.
        dry_run: Nothing was deleted; the figures say what a real run would delete now.
    """

    owners_removed: int
    contents_removed: int
    bytes_reclaimed: int
    dry_run: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


class ContentStore(abc.ABC):
    """An async content-addressed store. Drivers implement the batch methods; the rest derive.

    Implementations must be safe for concurrent use from one event loop, and for
    several processes on one backing database (workers on one host or a cluster):
    writes are idempotent because a reference names exactly one content.

    Ownership: a write may name its owner, the Temporal workflow id of the run whose
    activity wrote it. `gc` keeps content while one of its owners is retained, so a
    driver records `(owner, ref)` in the same transaction as the content: an owner
    row always has its content.
    """

    @abc.abstractmethod
    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Store each item once, and record `owner` as one of its owners.

        Args:
            items: The contents.
            owner: The workflow id of the run that needs them; None records no owner (the
                content then only survives a gc while it is younger than the grace period).

        Returns:
            The items' references, in order.
        """

    @abc.abstractmethod
    async def get_many(self, refs: Sequence[str]) -> list[bytes]:
        """The verified content of each reference, in order.

        Raises:
            InvalidRefError: a reference is malformed.
            MissingContentError: a reference is not stored.
            CorruptContentError: stored content does not match its reference.
            StoreKeyError: content is encrypted with a key not configured here.
        """

    @abc.abstractmethod
    async def exists(self, ref: str) -> bool:
        """Whether `ref` is stored (without reading or verifying it)."""

    @abc.abstractmethod
    async def stats(self) -> StoreStats:
        """How many contents and bytes are stored, and for how many owners."""

    @abc.abstractmethod
    async def owners(self) -> set[str]:
        """Every owner (workflow id) with at least one content recorded."""

    @abc.abstractmethod
    async def gc(self, retained: set[str], *, created_before: float, dry_run: bool = False) -> GcReport:
        """Forget owners that are not retained, then delete content no owner needs.

        Both steps spare what is younger than `created_before`: an owner whose first
        write came after it (a run started after `retained` was listed), and content
        written after it (an activity in flight whose owner row is not there yet, or
        content written without an owner). Runs in one transaction, excluding writers,
        so a write that records an owner for content being collected either lands
        before (and keeps it) or after (and stores it again).

        Args:
            retained: Owners whose content must stay: every workflow id the namespace lists.
            created_before: Unix time; the grace period ends here (typically now - 1 h).
            dry_run: Count what would go, delete nothing.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. The store must not be used afterwards."""

    async def count(self) -> tuple[int, int]:
        """How many contents are stored and their plaintext bytes in all (see `stats`)."""
        stats = await self.stats()
        return stats.contents, stats.bytes

    async def put(self, data: bytes, *, owner: str | None = None) -> str:
        """Store `data` once (owned by `owner`); return its reference `sha256:<hex>`."""
        (ref,) = await self.put_many([data], owner=owner)
        return ref

    async def get(self, ref: str) -> bytes:
        """The verified content of `ref` (see `get_many` for the errors)."""
        (data,) = await self.get_many([ref])
        return data

    async def put_json(self, obj: Any, *, owner: str | None = None) -> str:
        """Store the canonical JSON bytes of `obj` (owned by `owner`); return the reference."""
        return await self.put(canonical_json(obj), owner=owner)

    async def get_json(self, ref: str) -> Any:
        """The JSON value stored under `ref`."""
        return json.loads(await self.get(ref))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def unique(refs: Iterable[str]) -> list[str]:
    """`refs` without repeats, first occurrence kept (batches ask the backend once per reference)."""
    return list(dict.fromkeys(refs))


def open_rows(
    refs: Sequence[str], rows: Mapping[str, tuple[str, bytes]], sealer: Sealer, where: str
) -> list[bytes]:
    """The verified plaintext of each of `refs`, from the stored rows (`ref` -> encoding, data).

    Args:
        refs: The references asked for, in order (repeats allowed).
        rows: What the driver found.
        sealer: Opens encrypted rows.
        where: The store, for the error message.

    Raises:
        MissingContentError: a reference has no row.
        CorruptContentError: a row does not hash to its reference.
        StoreKeyError: a row is encrypted with a key not configured here.
    """
    plain: dict[str, bytes] = {}
    for ref in unique(refs):
        if ref not in rows:
            raise MissingContentError(f"content {ref} is not in {where}")
        encoding, stored = rows[ref]
        plain[ref] = verify(ref, sealer.open(ref, encoding, stored))
    return [plain[ref] for ref in refs]
