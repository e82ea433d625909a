"""Payload codec: compression of large payloads by default, AES-GCM encryption when a key is set.

Every payload the platform writes to Temporal (workflow and activity inputs and
results, signals, updates, memos, `static_summary`/`static_details`) passes
through `build_codec`'s chain on its way out and back in:

1. **Compression** (on by default): a payload whose serialised size is above
   `KEEL_COMPRESSION_THRESHOLD` bytes (default 4 KiB; `off` disables it) is
   zlib-compressed when that makes it smaller. Encoding `binary/zlib`.
2. **Encryption** (when `KEEL_ENCRYPTION_KEY` is set): every payload is sealed
   with AES-256-GCM. Encoding `binary/encrypted`, the key's id in the metadata
   field `encryption-key-id`, so keys can rotate: the current key encrypts,
   older keys listed in `KEEL_ENCRYPTION_KEYS_OLD` still decrypt.

Both stages wrap the *whole* original payload (metadata and data, serialised as
protobuf), so decoding restores it byte for byte: its encoding, its message type
and any other metadata. Payloads that carry neither encoding pass through
untouched, so histories written before a codec was enabled stay readable.

Keys come from the environment only, never from `keel.toml` or workflow inputs,
and are never logged. Key format: 32 bytes as hex (64 characters) or base64
(standard or URL-safe), optionally prefixed with an explicit id: `id:key`.
Without a prefix the id is the first 8 hex characters of a SHA-256 of the key.

The Web UI and `temporal ... --codec-endpoint` decode through the codec server
(`agentkeel.dev.codec_server`, `keel codec-server`), which uses the same chain.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter, ToJsonOptions
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

if TYPE_CHECKING:
    from agentkeel.settings import Settings

ENCODING_KEY = "encoding"
ENCODING_ZLIB = b"binary/zlib"
ENCODING_ENCRYPTED = b"binary/encrypted"
KEY_ID_KEY = "encryption-key-id"
CIPHER_KEY = "encryption-cipher"
CIPHER = b"AES256-GCM"

ENV_KEY = "KEEL_ENCRYPTION_KEY"
"""The current key: encrypts every new payload, and decrypts."""
ENV_OLD_KEYS = "KEEL_ENCRYPTION_KEYS_OLD"
"""Comma-separated older keys (`id:key` or `key`), for decrypting only."""
ENV_COMPRESSION_THRESHOLD = "KEEL_COMPRESSION_THRESHOLD"
"""Bytes above which payloads are compressed; `off` (or `none`, `false`) disables compression."""

DEFAULT_COMPRESSION_THRESHOLD = 4096
ZLIB_LEVEL = 6
NONCE_SIZE = 12
KEY_SIZE = 32
_AAD_PREFIX = b"agentkeel/payload/v1:"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_OFF = {"off", "none", "false", "no", "disabled"}


class CodecError(ValueError):
    """A payload cannot be decoded, or the codec's configuration is invalid."""


class UnknownKeyError(CodecError):
    """A payload was encrypted with a key this process does not hold."""


class CodecConfigError(CodecError):
    """`KEEL_ENCRYPTION_KEY`, `KEEL_ENCRYPTION_KEYS_OLD` or `KEEL_COMPRESSION_THRESHOLD` is invalid."""


def _metadata_encoding(payload: Payload) -> bytes:
    return payload.metadata.get(ENCODING_KEY, b"")


class CompressionCodec(PayloadCodec):
    """zlib-compress payloads bigger than a threshold, when compression makes them smaller.

    Decoding always decompresses, whatever the threshold, so a process with compression
    switched off still reads what others wrote.

    Args:
        threshold: Serialised size in bytes above which a payload is compressed; None never compresses.
        level: zlib level (1 fastest, 9 smallest).
    """

    def __init__(
        self, threshold: int | None = DEFAULT_COMPRESSION_THRESHOLD, level: int = ZLIB_LEVEL
    ) -> None:
        if threshold is not None and threshold < 0:
            raise CodecConfigError(f"compression threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.level = level

    def encode_one(self, payload: Payload) -> Payload:
        """Compress one payload, or return it unchanged when it is small or does not shrink."""
        if self.threshold is None or payload.ByteSize() <= self.threshold:
            return payload
        raw = payload.SerializeToString(deterministic=True)
        packed = zlib.compress(raw, self.level)
        # The wrapper adds ~25 bytes of metadata; only compress when the result is really smaller.
        if len(packed) + 32 >= len(raw):
            return payload
        return Payload(metadata={ENCODING_KEY: ENCODING_ZLIB}, data=packed)

    def decode_one(self, payload: Payload) -> Payload:
        """Restore one compressed payload; others pass through."""
        if _metadata_encoding(payload) != ENCODING_ZLIB:
            return payload
        try:
            return Payload.FromString(zlib.decompress(payload.data))
        except (zlib.error, ValueError, DecodeError) as exc:
            raise CodecError(f"corrupt binary/zlib payload: {exc}") from None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Compress the payloads that are worth it."""
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decompress `binary/zlib` payloads."""
        return [self.decode_one(p) for p in payloads]


@dataclass(frozen=True)
class EncryptionKey:
    """One AES-256 key and its id (the id is stored in payload metadata; the key never is)."""

    id: str
    key: bytes = dataclasses.field(repr=False)

    def __repr__(self) -> str:  # never show key material, even in tracebacks
        return f"EncryptionKey(id={self.id!r})"


def derive_key_id(key: bytes) -> str:
    """The default id of a key: 8 hex characters of a domain-separated SHA-256 (not reversible)."""
    return hashlib.sha256(b"agentkeel-key-id:" + key).hexdigest()[:8]


def _decode_key_material(text: str) -> bytes:
    text = text.strip()
    if len(text) == KEY_SIZE * 2 and re.fullmatch(r"[0-9A-Fa-f]+", text):
        return bytes.fromhex(text)
    padded = (text + "=" * (-len(text) % 4)).encode("ascii", "replace")
    for alphabet in (b"+/", b"-_"):
        try:
            key = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_SIZE:
            return key
    # Never echo the value: it is (or is meant to be) a secret.
    raise CodecConfigError(
        f"an encryption key must be {KEY_SIZE} bytes as hex ({KEY_SIZE * 2} characters) or base64 "
        f"(e.g. `python -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())'`)"
    )


def parse_key(text: str, *, source: str = ENV_KEY) -> EncryptionKey:
    """Parse `key` or `id:key` into an `EncryptionKey`.

    Raises:
        CodecConfigError: the key is not 32 bytes of hex/base64, or the id is not a short plain name.
    """
    text = text.strip()
    key_id: str | None = None
    if ":" in text:  # neither hex nor base64 contains ':'
        key_id, text = (part.strip() for part in text.split(":", 1))
        if not _KEY_ID_RE.match(key_id):
            raise CodecConfigError(f"{source}: key id must be 1-64 characters of [A-Za-z0-9._-]")
    try:
        key = _decode_key_material(text)
    except CodecConfigError as exc:
        raise CodecConfigError(f"{source}: {exc}") from None
    return EncryptionKey(id=key_id or derive_key_id(key), key=key)


class Keyring:
    """The current key (encrypts) and older keys (decrypt only), by id.

    Raises:
        CodecConfigError: two different keys share an id.
    """

    def __init__(self, current: EncryptionKey, old: Sequence[EncryptionKey] = ()) -> None:
        self.current = current
        self._by_id: dict[str, EncryptionKey] = {}
        for key in (current, *old):
            known = self._by_id.get(key.id)
            if known is not None and known.key != key.key:
                raise CodecConfigError(f"two different encryption keys have the id {key.id!r}")
            self._by_id.setdefault(key.id, key)

    @property
    def ids(self) -> list[str]:
        """Ids of every key held, current first."""
        return list(self._by_id)

    def get(self, key_id: str) -> EncryptionKey:
        """The key with this id.

        Raises:
            UnknownKeyError: no key with that id is configured.
        """
        try:
            return self._by_id[key_id]
        except KeyError:
            raise UnknownKeyError(
                f"payload was encrypted with key id {key_id!r}, which is not configured "
                f"(known ids: {', '.join(self.ids)}); put that key in {ENV_KEY} or {ENV_OLD_KEYS}"
            ) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, current: str | None = None) -> Keyring | None:
        """The keyring from `KEEL_ENCRYPTION_KEY` / `KEEL_ENCRYPTION_KEYS_OLD`; None when no key is set.

        Args:
            env: Environment to read (default `os.environ`).
            current: The current key's text, overriding `KEEL_ENCRYPTION_KEY` (from `Settings`).
        """
        env = os.environ if env is None else env
        current = current if current is not None else env.get(ENV_KEY, "")
        old_text = env.get(ENV_OLD_KEYS, "")
        old = [parse_key(item, source=ENV_OLD_KEYS) for item in old_text.split(",") if item.strip()]
        if not current.strip():
            if old:
                raise CodecConfigError(f"{ENV_OLD_KEYS} is set but {ENV_KEY} is not")
            return None
        return cls(parse_key(current), old)


class EncryptionCodec(PayloadCodec):
    """Seal every payload with AES-256-GCM under the keyring's current key.

    The nonce (12 random bytes) is prepended to the ciphertext; the key id is
    authenticated as associated data, so a payload cannot be relabelled with
    another key's id.
    """

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._aead = {key_id: AESGCM(keyring.get(key_id).key) for key_id in keyring.ids}

    def encode_one(self, payload: Payload) -> Payload:
        """Encrypt one payload with the current key."""
        key_id = self.keyring.current.id
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead[key_id].encrypt(
            nonce, payload.SerializeToString(deterministic=True), _AAD_PREFIX + key_id.encode()
        )
        return Payload(
            metadata={ENCODING_KEY: ENCODING_ENCRYPTED, KEY_ID_KEY: key_id.encode(), CIPHER_KEY: CIPHER},
            data=nonce + sealed,
        )

    def decode_one(self, payload: Payload) -> Payload:
        """Decrypt one `binary/encrypted` payload; others pass through.

        Raises:
            UnknownKeyError: its key id is not configured.
            CodecError: it was tampered with or is malformed.
        """
        if _metadata_encoding(payload) != ENCODING_ENCRYPTED:
            return payload
        key_id = _key_id_of(payload)
        self.keyring.get(key_id)  # raises UnknownKeyError with the list of known ids
        data = payload.data
        if len(data) < NONCE_SIZE + 16:
            raise CodecError(f"binary/encrypted payload with key id {key_id!r} is too short")
        try:
            plain = self._aead[key_id].decrypt(
                data[:NONCE_SIZE], data[NONCE_SIZE:], _AAD_PREFIX + key_id.encode()
            )
        except InvalidTag:
            raise CodecError(
                f"binary/encrypted payload with key id {key_id!r} failed authentication "
                f"(tampered with, or a different key under the same id)"
            ) from None
        return Payload.FromString(plain)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload."""
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt `binary/encrypted` payloads."""
        return [self.decode_one(p) for p in payloads]


def _key_id_of(payload: Payload) -> str:
    raw_id = payload.metadata.get(KEY_ID_KEY)
    if raw_id is None:
        raise CodecError(f"binary/encrypted payload has no {KEY_ID_KEY} metadata")
    return raw_id.decode("utf-8", "replace")


class GuardCodec(PayloadCodec):
    """Without a key: decoding an encrypted payload raises a clear error instead of a JSON error later."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Leave payloads as they are."""
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Refuse encrypted payloads; pass the rest through."""
        for payload in payloads:
            if _metadata_encoding(payload) == ENCODING_ENCRYPTED:
                raise UnknownKeyError(
                    f"payload is encrypted (key id {_key_id_of(payload)!r}) but no key is configured: "
                    f"set {ENV_KEY}"
                )
        return list(payloads)


class CodecChain(PayloadCodec):
    """Apply codecs in order on encode and in reverse order on decode."""

    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        if not codecs:
            raise ValueError("a codec chain needs at least one codec")
        self.codecs = tuple(codecs)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encode through every codec, first to last."""
        result = list(payloads)
        for codec in self.codecs:
            result = await codec.encode(result)
        return result

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decode through every codec, last to first."""
        result = list(payloads)
        for codec in reversed(self.codecs):
            result = await codec.decode(result)
        return result

    @property
    def encrypts(self) -> bool:
        """Whether the chain encrypts payloads."""
        return any(isinstance(codec, EncryptionCodec) for codec in self.codecs)


def compression_threshold(env: Mapping[str, str] | None = None) -> int | None:
    """`KEEL_COMPRESSION_THRESHOLD` in bytes, default 4096; None when compression is switched off.

    Raises:
        CodecConfigError: the value is neither a non-negative integer nor `off`.
    """
    env = os.environ if env is None else env
    text = env.get(ENV_COMPRESSION_THRESHOLD, "").strip().lower()
    if not text:
        return DEFAULT_COMPRESSION_THRESHOLD
    if text in _OFF:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise CodecConfigError(
            f"{ENV_COMPRESSION_THRESHOLD} must be a byte count >= 0 or 'off', got {text!r}"
        )
    return value


def build_codec(env: Mapping[str, str] | None = None, *, key: str | None = None) -> CodecChain:
    """The platform's codec chain from the environment.

    Compression first (so ciphertext, which never compresses, is not attempted),
    then encryption when a key is set. Without a key the chain still recognises
    encrypted payloads and fails them with a clear error.

    Args:
        env: Environment to read (default `os.environ`).
        key: The current key's text, overriding `KEEL_ENCRYPTION_KEY`.

    Raises:
        CodecConfigError: a key or the threshold is invalid.
    """
    env = os.environ if env is None else env
    codecs: list[PayloadCodec] = [CompressionCodec(compression_threshold(env))]
    keyring = Keyring.from_env(env, current=key)
    codecs.append(EncryptionCodec(keyring) if keyring is not None else GuardCodec())
    return CodecChain(codecs)


class KeelPayloadConverter(PydanticPayloadConverter):
    """The pydantic payload converter, leaving out fields a model was not given.

    A field left at its default is not written (`exclude_unset`): decoding restores the
    default, and history holds only what each payload says (the conversation's references,
    not a dozen empty fields per activity).
    """

    def __init__(self) -> None:
        super().__init__(ToJsonOptions(exclude_unset=True))


def build_data_converter(settings_or_env: Settings | Mapping[str, str] | None = None) -> DataConverter:
    """The pydantic data converter with the platform's codec applied.

    When payloads are encrypted, failure messages and stack traces are moved into
    an encoded (so encrypted) attribute as well, since they can quote inputs.

    Args:
        settings_or_env: `Settings` (its `encryption_key`; old keys and the threshold from
            `os.environ`), an environment mapping, or None for `os.environ`.

    Raises:
        CodecConfigError: a key or the threshold is invalid.
    """
    from agentkeel.settings import Settings

    pydantic_data_converter = DataConverter(payload_converter_class=KeelPayloadConverter)

    if isinstance(settings_or_env, Settings):
        secret = settings_or_env.encryption_key
        codec = build_codec(os.environ, key=secret.get_secret_value() if secret is not None else "")
    else:
        codec = build_codec(settings_or_env)
    if codec.encrypts:
        return dataclasses.replace(
            pydantic_data_converter,
            payload_codec=codec,
            failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
        )
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)
