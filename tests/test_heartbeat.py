"""One heartbeat mechanism: one loop per activity execution, nested users only set its detail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from agentkeel.activities.heartbeat import heartbeating

pytestmark = pytest.mark.unit


@activity.defn(name="nested_beats")
async def nested_beats() -> None:
    async with heartbeating(0.1):  # what the worker's interceptor runs around every activity
        await asyncio.sleep(0.25)
        async with heartbeating(0.1, detail="waiting for p:m"):  # what call_llm runs inside it
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.2)


async def test_a_nested_heartbeat_sets_the_detail_of_the_running_loop_instead_of_starting_another():
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    await env.run(nested_beats)
    # One loop at 0.1 s for 0.7 s: about seven beats (two loops would give about twelve).
    assert 5 <= len(beats) <= 8, beats
    with_detail = [b for b in beats if b == ("waiting for p:m",)]
    assert 1 <= len(with_detail) <= 3
    assert beats[-1] == ()  # the detail is dropped when the nested block ends
