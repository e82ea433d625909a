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
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

REF_PREFIX = "sha256:"
_REF_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class StoreError(Exception):
    """Base of every error the conversation store raises."""


class InvalidRefError(StoreError, ValueError):
    """A string is not a reference of the form `sha256:<64 lowercase hex>`."""


class MissingContentError(StoreError, KeyError):
    """A reference is not in the store (never written, or reclaimed by `delete_unreferenced`)."""

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


class ContentStore(abc.ABC):
    """An async content-addressed store. Drivers implement the batch methods; the rest derive.

    Implementations must be safe for concurrent use from one event loop, and for
    several processes on one backing database (workers on one host or a cluster):
    writes are idempotent because a reference names exactly one content.
    """

    @abc.abstractmethod
    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        """Store each item once.

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
    async def delete_unreferenced(self, keep: set[str], *, created_before: float | None = None) -> int:
        """Delete every stored content whose reference is not in `keep`.

        Args:
            keep: References still in use (every reference reachable from retained runs).
            created_before: Only delete content written before this Unix time, so content
                a running activity has just written, and no run records yet, survives a gc.

        Returns:
            How many contents were deleted.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. The store must not be used afterwards."""

    async def put(self, data: bytes, *, owner: str | None = None) -> str:
        """Store `data` once; return its reference `sha256:<hex>`."""
        (ref,) = await self.put_many([data], owner=owner)
        return ref

    async def get(self, ref: str) -> bytes:
        """The verified content of `ref` (see `get_many` for the errors)."""
        (data,) = await self.get_many([ref])
        return data

    async def put_json(self, obj: Any, *, owner: str | None = None) -> str:
        """Store the canonical JSON bytes of `obj`; return the reference."""
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
