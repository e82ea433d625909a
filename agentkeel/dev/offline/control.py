"""`ProviderControl`: a small client of the offline provider's control API, for tests and chaos runs.

Each method makes its request at once (a local round trip of about a
millisecond) and returns its result; the result may also be awaited, so sync
and async tests alike can write `control.set_faults(...)` or
`await control.set_faults(...)`.

Do not point it at a provider running on the caller's own event loop (use the
`OfflineProvider` methods of the same names there): the blocking request would
wait for a loop it is blocking.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import httpx

from agentkeel.dev.offline.journal import JournalEntry


class AwaitableDict(dict[str, Any]):
    """A dict that is also awaitable (awaiting gives the dict itself)."""

    def __await__(self) -> Generator[Any, None, AwaitableDict]:
        return self
        yield  # pragma: no cover - makes this a generator


class AwaitableList(list[JournalEntry]):
    """A list that is also awaitable (awaiting gives the list itself)."""

    def __await__(self) -> Generator[Any, None, AwaitableList]:
        return self
        yield  # pragma: no cover - makes this a generator


class ProviderControlError(RuntimeError):
    """The control API refused a request (bad fault configuration, unknown endpoint)."""


class ProviderControl:
    """Client of `/_control/*` of an offline provider.

    Args:
        url: Base URL of the control API, e.g. `http://127.0.0.1:8901` (the control port, or the
            API port while it accepts connections).
        timeout: Seconds per request.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def set_faults(self, **fields: Any) -> AwaitableDict:
        """Replace the fault configuration (fields of `FaultConfig`; omitted ones mean no fault)."""
        return AwaitableDict(self._call("PUT", "/_control/faults", json=fields))

    def update_faults(self, **fields: Any) -> AwaitableDict:
        """Change some fields of the fault configuration, keeping the others."""
        return AwaitableDict(self._call("PATCH", "/_control/faults", json=fields))

    def faults(self) -> AwaitableDict:
        """The current fault configuration (with what is left of `fail_next`)."""
        return AwaitableDict(self._call("GET", "/_control/faults"))

    def reset(self) -> AwaitableDict:
        """Clear every fault and the journal."""
        return AwaitableDict(self._call("POST", "/_control/reset"))

    def journal(self, since: int = 0, path: str | None = None) -> AwaitableList:
        """Journal entries after sequence number `since`, oldest first; only `path` when given."""
        entries = self._call("GET", "/_control/journal", params={"since": since})
        return AwaitableList(e for e in entries if path is None or e["path"] == path)

    def clear_journal(self) -> AwaitableDict:
        """Empty the journal."""
        return AwaitableDict(self._call("DELETE", "/_control/journal"))

    def health(self) -> AwaitableDict:
        """`{"status": "ok", "base_url": ..., "accepting": bool}`."""
        return AwaitableDict(self._call("GET", "/_control/health"))

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll `health` until the provider answers.

        Raises:
            TimeoutError: it did not answer within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"offline provider control API {self.url} did not answer") from None
                time.sleep(0.05)

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ProviderControlError(f"{method} {path}: {response.status_code} {message}")
        return response.json()
