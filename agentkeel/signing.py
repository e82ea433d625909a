"""Signed review decisions: Ed25519 keys, the signed message, signing and verification.

A team whose review policy lists reviewer public keys accepts only decisions
signed by one of them. The signature covers the workflow id, the review request
id, the decision, the reviewer's name and a digest of the (edited) arguments, so
someone who can only reach the Temporal namespace cannot forge a decision, and a
signature cannot be replayed onto another run, another request or other
arguments.

This module is deterministic and free of I/O except `load_private_key` and
`write_key_pair`, so the workflow verifies signatures inside its sandbox.

Formats: a public key is `ed25519:<base64 of the 32 raw bytes>`; a private key
file is PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes); a
signature is base64 of the 64 raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_PREFIX = "ed25519:"
SIGNATURE_VERSION = "keel-review-v1"
"""Part of every signed message, so a signature made for anything else never verifies."""


class SigningError(ValueError):
    """A key or a signature is malformed."""


def arguments_digest(arguments: dict[str, Any] | None) -> str:
    """SHA-256 of the canonical JSON of edited arguments (`-` when there are none)."""
    if arguments is None:
        return "-"
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def decision_message(
    *,
    workflow_id: str,
    request_id: str,
    decision: str,
    reviewer: str,
    arguments: dict[str, Any] | None,
) -> bytes:
    """The exact bytes a reviewer signs for one decision on one review request."""
    fields = [SIGNATURE_VERSION, workflow_id, request_id, decision, reviewer, arguments_digest(arguments)]
    return "\n".join(fields).encode()


def public_key_text(key: Ed25519PublicKey) -> str:
    """`ed25519:<base64>`: the form a team's review policy lists."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Parse `ed25519:<base64>`.

    Raises:
        SigningError: When the text is not a 32-byte Ed25519 public key.
    """
    body = text.strip()
    if not body.startswith(PUBLIC_KEY_PREFIX):
        raise SigningError(f"public key {text[:24]!r}... must start with {PUBLIC_KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(body.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SigningError(f"public key {text[:24]!r}... is not a 32-byte Ed25519 key in base64") from exc


def sign(private_key: Ed25519PrivateKey, message: bytes) -> str:
    """Base64 signature of `message`."""
    return base64.b64encode(private_key.sign(message)).decode()


def verify(public_keys: list[str], message: bytes, signature: str | None) -> str | None:
    """Which listed key signed `message`, or None when none did (or there is no signature)."""
    if not signature:
        return None
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return None
    for text in public_keys:
        try:
            parse_public_key(text).verify(raw, message)
        except (InvalidSignature, SigningError):
            continue
        return text
    return None


def generate_key_pair() -> tuple[Ed25519PrivateKey, str]:
    """A new private key and its public key text."""
    key = Ed25519PrivateKey.generate()
    return key, public_key_text(key.public_key())


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: protect it with file permissions)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key.

    Raises:
        SigningError: When the file is missing or holds no Ed25519 private key.
    """
    file = Path(path).expanduser()
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise SigningError(f"reviewer key file {file} does not exist") from exc
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{file} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{file} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def write_key_pair(path: str | Path) -> str:
    """Write a new private key to `path` (mode 0600) and `path.pub`; return the public key text.

    Raises:
        FileExistsError: When `path` exists (a key is never overwritten).
    """
    file = Path(path).expanduser()
    key, public = generate_key_pair()
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_pem(key))
    file.with_name(file.name + ".pub").write_text(public + "\n")
    return public
