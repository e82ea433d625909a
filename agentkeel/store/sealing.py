"""Encryption at rest for the store, with the payload codec's keys and cipher.

Nothing here is new cryptography: content is wrapped in a Temporal `Payload` and
sealed by `agentkeel.codec.EncryptionCodec`, so the store uses the same
`KEEL_ENCRYPTION_KEY` / `KEEL_ENCRYPTION_KEYS_OLD` keyring, the same AES-256-GCM
with the key id authenticated, and the same rotation rule (the current key seals,
older keys still open) as every payload in Temporal history.

The reference stays the hash of the plaintext, so deduplication and the
verify-on-read check work the same with or without a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload

from agentkeel.codec import (
    ENCODING_ENCRYPTED,
    ENCODING_KEY,
    CodecError,
    EncryptionCodec,
    Keyring,
    UnknownKeyError,
)
from agentkeel.store.base import CorruptContentError, StoreKeyError

PLAIN = "plain"
"""Row encoding: the content's bytes as they are."""
SEALED = "sealed"
"""Row encoding: a serialised `Payload` sealed by `EncryptionCodec` (binary/encrypted)."""


class Sealer:
    """Turns plaintext into the bytes a driver stores, and back.

    Args:
        keyring: The payload keyring; None stores plaintext (and refuses sealed rows clearly).
    """

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring
        self._codec = EncryptionCodec(keyring) if keyring is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, key: str | None = None) -> Sealer:
        """The sealer for `KEEL_ENCRYPTION_KEY` (or `key`) and `KEEL_ENCRYPTION_KEYS_OLD`.

        Raises:
            agentkeel.codec.CodecConfigError: a key is invalid.
        """
        return cls(Keyring.from_env(os.environ if env is None else env, current=key))

    @property
    def encrypts(self) -> bool:
        """Whether new content is encrypted."""
        return self._codec is not None

    def seal(self, plain: bytes) -> tuple[str, bytes]:
        """The row encoding and stored bytes for `plain`."""
        if self._codec is None:
            return PLAIN, plain
        # A bare payload (no metadata) keeps the wrapper to ~60 bytes: nonce, tag, key id.
        sealed = self._codec.encode_one(Payload(data=plain))
        return SEALED, sealed.SerializeToString(deterministic=True)

    def open(self, ref: str, encoding: str, stored: bytes) -> bytes:
        """The plaintext of a stored row (not yet verified against `ref`; the caller does).

        Raises:
            StoreKeyError: the row is sealed and its key is not configured.
            CorruptContentError: the row fails authentication or is malformed.
        """
        if encoding == PLAIN:
            return stored
        if encoding != SEALED:
            raise CorruptContentError(f"content {ref} has an unknown encoding {encoding!r}")
        try:
            payload = Payload.FromString(stored)
        except DecodeError:
            raise CorruptContentError(f"content {ref} is not a sealed payload: it was altered") from None
        if payload.metadata.get(ENCODING_KEY) != ENCODING_ENCRYPTED:
            raise CorruptContentError(f"content {ref} is marked sealed but is not encrypted")
        if self._codec is None:
            raise StoreKeyError(
                f"content {ref} is encrypted but no key is configured: set KEEL_ENCRYPTION_KEY"
            )
        try:
            return self._codec.decode_one(payload).data
        except UnknownKeyError as exc:
            raise StoreKeyError(f"content {ref}: {exc}") from None
        except CodecError as exc:
            raise CorruptContentError(f"content {ref}: {exc}") from None
