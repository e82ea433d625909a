"""Timeouts and retry policies, one named constant per kind of activity."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from agentkeel import errors
    from agentkeel.contracts import ToolSpec

LLM_START_TO_CLOSE = timedelta(seconds=120)
"""One LLM call, including time spent waiting on a slow provider."""
LLM_HEARTBEAT = timedelta(seconds=10)
"""The activity heartbeats every few seconds while the provider thinks; a dead worker is noticed fast."""
LLM_SCHEDULE_TO_CLOSE = timedelta(minutes=15)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=list(errors.LLM_NON_RETRYABLE),
)
"""At most 5 attempts, exponential backoff from 2 s; the server adds jitter.

`LLMRateLimited` and `CircuitOpen` override the backoff with `next_retry_delay`.
"""

LLM_OUTAGE_PAUSE = timedelta(seconds=20)
"""When a call fails for want of a provider (down, breakers open, throttled) after its retries,
the run waits this long on a durable timer and tries again..."""
LLM_OUTAGE_MAX = timedelta(minutes=15)
"""...until the outage has lasted this long; then the run fails and compensates."""

TOOL_START_TO_CLOSE = timedelta(seconds=60)
TOOL_HEARTBEAT = timedelta(seconds=10)
"""The worker heartbeats every running activity (workers/interceptors.py), so a tool or a compensation
on a killed worker is retried after this, not after the whole start-to-close timeout."""
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=list(errors.TOOL_NON_RETRYABLE),
)


def tool_timeout(spec: ToolSpec) -> timedelta:
    """A tool's start-to-close timeout: its own (`@tool(timeout_s=...)`), else `TOOL_START_TO_CLOSE`."""
    return timedelta(seconds=spec.timeout_s) if spec.timeout_s else TOOL_START_TO_CLOSE


def tool_retry(spec: ToolSpec) -> RetryPolicy:
    """A tool's retry policy: `TOOL_RETRY` with the tool's own `max_attempts` when it sets one."""
    return replace(TOOL_RETRY, maximum_attempts=spec.max_attempts) if spec.max_attempts else TOOL_RETRY


REVIEW_CHECK_TIMEOUT = timedelta(seconds=10)
"""A tool's Python review predicate (a local activity): quick, local, no I/O expected."""
REVIEW_CHECK_RETRY = RetryPolicy(maximum_attempts=3)

COMPENSATION_START_TO_CLOSE = timedelta(seconds=60)
COMPENSATION_HEARTBEAT = TOOL_HEARTBEAT
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
)
"""Compensations are retried longer than forward steps: leaving a side effect behind is the worst outcome."""

RESOLVE_START_TO_CLOSE = timedelta(seconds=10)
RESOLVE_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=[errors.UNKNOWN_TEAM])
