"""Who a decision is from, and the key that signs it, on the deciding person's machine.

Nobody decides anonymously: the reviewer is the name given, else `KEEL_REVIEWER`,
else the operating-system user. Teams whose review policy lists reviewer keys
accept only signed decisions: the key file is named by `KEEL_REVIEWER_KEY`
(`keel keygen` makes one).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentkeel.signing import SigningError, decision_message, load_private_key, sign

REVIEWER_ENV = "KEEL_REVIEWER"
REVIEWER_KEY_ENV = "KEEL_REVIEWER_KEY"


@dataclass(frozen=True)
class Reviewer:
    """A resolved reviewer identity.

    Attributes:
        name: The name decisions are recorded under.
        source: Where it came from: `argument`, `KEEL_REVIEWER` or `OS user`.
    """

    name: str
    source: str


def resolve_reviewer(name: str | None = None) -> Reviewer:
    """The reviewer: `name`, else `KEEL_REVIEWER`, else the OS user.

    Raises:
        ValueError: No non-empty name can be found.
    """
    if name is not None:
        if not name.strip():
            raise ValueError("the reviewer name is empty")
        return Reviewer(name.strip(), "argument")
    env = os.environ.get(REVIEWER_ENV, "").strip()
    if env:
        return Reviewer(env, REVIEWER_ENV)
    try:
        user = getpass.getuser().strip()
    except (KeyError, OSError):  # no passwd entry, no LOGNAME/USER: nothing to go on
        user = ""
    if not user:
        raise ValueError(f"no reviewer: give one, or set {REVIEWER_ENV}")
    return Reviewer(user, "OS user")


def reviewer_key(path: str | Path | None = None) -> Ed25519PrivateKey | None:
    """The signing key: the file at `path`, else the one `KEEL_REVIEWER_KEY` names, else None.

    Raises:
        SigningError: The named file is missing or not an Ed25519 private key.
    """
    chosen = path if path is not None else os.environ.get(REVIEWER_KEY_ENV, "").strip() or None
    return load_private_key(chosen) if chosen is not None else None


def signature_for(
    key: Ed25519PrivateKey | None,
    *,
    workflow_id: str,
    request_id: str,
    decision: str,
    reviewer: str,
    arguments: dict[str, Any] | None,
) -> str | None:
    """The decision's signature, or None without a key."""
    if key is None:
        return None
    message = decision_message(
        workflow_id=workflow_id,
        request_id=request_id,
        decision=decision,
        reviewer=reviewer,
        arguments=arguments,
    )
    return sign(key, message)


__all__ = [
    "REVIEWER_ENV",
    "REVIEWER_KEY_ENV",
    "Reviewer",
    "SigningError",
    "resolve_reviewer",
    "reviewer_key",
    "signature_for",
]
