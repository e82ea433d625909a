"""One heartbeat mechanism for every activity: one loop per execution, with an optional detail.

The worker's interceptor (`agentkeel.workers.interceptors`) runs `heartbeating` around every
async activity that has a heartbeat timeout, so a killed worker is noticed within that
timeout. An activity that wants to say what it waits for (`call_llm`: "waiting for
provider:model") wraps the wait in `heartbeating(..., detail=...)` too: under the
interceptor that only sets the detail of the running loop; without it (a user's worker
without the plugin, `ActivityEnvironment` in tests) it starts the loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

from temporalio import activity


@dataclass
class _Beat:
    detail: str | None = None


HEARTBEAT_EVERY_S = 2.0
"""Longest gap between two heartbeats of an activity: well under the 10 s heartbeat timeouts of
`agentkeel.workflows.policies`, so a dead worker is noticed within them."""

_CURRENT: ContextVar[_Beat | None] = ContextVar("agentkeel_heartbeat", default=None)


async def _beat_every(beat: _Beat, seconds: float) -> None:
    # Sleep first: the SDK sends an activity's first heartbeat to the server at once (a persisted
    # write), and an activity that ends within `seconds` needs none, since the server's heartbeat
    # timer already runs from the activity's start.
    while True:
        await asyncio.sleep(seconds)
        if beat.detail is None:
            activity.heartbeat()
        else:
            activity.heartbeat(beat.detail)


@contextlib.asynccontextmanager
async def heartbeating(every_s: float, detail: str | None = None) -> AsyncIterator[None]:
    """Heartbeat every `every_s` seconds while the block runs, with `detail` when given.

    Nested use (the interceptor's loop already runs for this activity) starts no second
    loop: it sets the detail for the duration of the block.
    """
    running = _CURRENT.get()
    if running is not None:
        previous, running.detail = running.detail, detail if detail is not None else running.detail
        try:
            yield
        finally:
            running.detail = previous
        return
    beat = _Beat(detail)
    token = _CURRENT.set(beat)
    task = asyncio.create_task(_beat_every(beat, every_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _CURRENT.reset(token)
