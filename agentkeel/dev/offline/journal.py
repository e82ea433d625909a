"""The request journal of the offline provider: every `/v1/*` request, what was asked and what happened.

Served at `GET /_control/journal` (optionally `?since=SEQ` for entries after a
sequence number), cleared by `DELETE /_control/journal`. Control requests are
not journaled, so polling the journal does not change it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

MAX_ENTRIES = 10_000
"""The journal keeps the most recent entries only."""

REDACTED_HEADERS = {"authorization": "Bearer ***", "api-key": "***", "x-api-key": "***"}
"""Headers whose values never enter the journal, and what stands in for them."""

Outcome = Literal["ok", "error", "dropped", "hang"]


class JournalEntry(TypedDict):
    """One journaled request."""

    seq: int
    ts: float
    method: str
    path: str
    agent: str | None
    model: str | None
    headers: dict[str, str]
    body: Any
    status: int | None
    latency_ms: float
    outcome: Outcome


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with credentials replaced."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = REDACTED_HEADERS.get(key, value)
    return out


class Journal:
    """A bounded, ordered record of requests; sequence numbers keep growing across clears."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=max_entries)
        self._seq = itertools.count(1)

    def record(
        self,
        *,
        ts: float,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Any,
        status: int | None,
        latency_ms: float,
        outcome: Outcome,
        agent: str | None = None,
    ) -> JournalEntry:
        """Append one entry and return it."""
        model = body.get("model") if isinstance(body, Mapping) else None
        entry = JournalEntry(
            seq=next(self._seq),
            ts=ts,
            method=method,
            path=path,
            agent=agent,
            model=model if isinstance(model, str) else None,
            headers=redact_headers(headers),
            body=body,
            status=status,
            latency_ms=round(latency_ms, 3),
            outcome=outcome,
        )
        self._entries.append(entry)
        return entry

    def entries(self, since: int = 0) -> list[JournalEntry]:
        """The entries with `seq > since`, oldest first."""
        return [e for e in self._entries if e["seq"] > since]

    def clear(self) -> None:
        """Forget every entry (sequence numbers are not reused)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
