"""The request journal of the offline provider: every `/v1/*` request, what was asked and what happened.

Served at `GET /_control/journal` (optionally `?since=SEQ` for entries after a
sequence number), cleared by `DELETE /_control/journal`. Control requests are
not journaled, so polling the journal does not change it.

Every entry says how many messages a chat request carried (`messages`), how
large its body was (`body_bytes`) and its `X-Correlation-ID`, so a test or a
benchmark can check what the model was sent without keeping bodies: a journal
made with `keep_bodies=False` (`keel llm --no-journal-bodies`) stores `body:
null`, which keeps the provider's memory flat under conversations of megabytes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from agentkeel.names import CORRELATION_HEADER

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
    correlation_id: str | None
    messages: int | None
    """Messages in a chat request's body (None for other requests)."""
    body_bytes: int
    body: Any
    """The parsed body; None when the journal does not keep bodies."""
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

    def __init__(self, max_entries: int = MAX_ENTRIES, *, keep_bodies: bool = True) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=max_entries)
        self._seq = itertools.count(1)
        self.keep_bodies = keep_bodies

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
        body_bytes: int = 0,
    ) -> JournalEntry:
        """Append one entry and return it."""
        model = body.get("model") if isinstance(body, Mapping) else None
        messages = body.get("messages") if isinstance(body, Mapping) else None
        redacted = redact_headers(headers)
        entry = JournalEntry(
            seq=next(self._seq),
            ts=ts,
            method=method,
            path=path,
            agent=agent,
            model=model if isinstance(model, str) else None,
            headers=redacted,
            correlation_id=redacted.get(CORRELATION_HEADER.lower()),
            messages=len(messages) if isinstance(messages, list) else None,
            body_bytes=body_bytes,
            body=body if self.keep_bodies else None,
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
