"""The bare-SDK baseline: a plain Temporal workflow running N activities in a row, nothing else.

This is what the platform is measured against. It uses only `temporalio` (no
pydantic converter, no interceptors, no search attributes, no pass-through
modules), so the sandbox imports this module as is.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

BARE_WORKFLOW = "BenchBareWorkflow"
NOOP_ACTIVITY = "bench_bare_noop"
SLEEP_ACTIVITY = "bench_bare_sleep"
ACTIVITY_TIMEOUT = timedelta(seconds=120)


@activity.defn(name=NOOP_ACTIVITY)
async def bare_noop(step: int) -> int:
    """Does nothing: the cheapest activity there is."""
    return step


@activity.defn(name=SLEEP_ACTIVITY)
async def bare_sleep(step: int) -> int:
    """Waits one second, like an LLM call with 1 s of provider latency."""
    await asyncio.sleep(1.0)
    return step


@workflow.defn(name=BARE_WORKFLOW)
class BareWorkflow:
    """Runs `steps` activities one after the other, like a saga's LLM turns."""

    @workflow.run
    async def run(self, steps: int, sleep: bool) -> int:
        """Run the activities; returns how many ran."""
        name = SLEEP_ACTIVITY if sleep else NOOP_ACTIVITY
        for step in range(steps):
            await workflow.execute_activity(name, step, start_to_close_timeout=ACTIVITY_TIMEOUT)
        return steps


BARE_ACTIVITIES = [bare_noop, bare_sleep]
