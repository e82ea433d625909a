"""Worker interceptors: log context around every activity execution.

`ContextInterceptor` binds structlog context variables (workflow_id, run_id,
activity_type, activity_id, attempt, task_queue, correlation_id) for the whole
activity call, so every log line written inside an activity carries them,
whichever logger wrote it (structlog, `activity.logger`, a library's stdlib
logger). Sync activities run in a thread pool with a copy of the context, so
they get the same fields.

Workflow-side records need no interceptor: `workflow.logger` attaches the
workflow's ids as extras, which `agentkeel.logs` flattens into fields.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from agentkeel.activities.heartbeat import HEARTBEAT_EVERY_S, heartbeating


def activity_log_context(info: activity.Info, args: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """The log fields for one activity execution.

    Args:
        info: The running activity's info.
        args: The activity's arguments; the first one's `correlation_id` attribute, when present,
            becomes the `correlation_id` field (every request model of the platform has one).

    Returns:
        Field name to value, ready for `structlog.contextvars.bind_contextvars`.
    """
    fields: dict[str, Any] = {
        "workflow_id": info.workflow_id,
        "run_id": info.workflow_run_id,
        "workflow_type": info.workflow_type,
        "activity_type": info.activity_type,
        "activity_id": info.activity_id,
        "attempt": info.attempt,
        "task_queue": info.task_queue,
    }
    correlation_id = getattr(args[0], "correlation_id", None) if args else None
    if correlation_id is None and args and isinstance(args[0], dict):
        correlation_id = args[0].get("correlation_id")
    if correlation_id:
        fields["correlation_id"] = correlation_id
    return fields


class _ContextActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        fields = activity_log_context(info, input.args)
        with structlog.contextvars.bound_contextvars(**fields):
            timeout = info.heartbeat_timeout
            if timeout is None or not asyncio.iscoroutinefunction(input.fn):
                return await self.next.execute_activity(input)
            # Heartbeat for the activity while it runs: a worker that dies is then noticed
            # within the heartbeat timeout, and a retry is scheduled at once instead of
            # after the whole start-to-close timeout. Activities need not heartbeat themselves.
            async with heartbeating(min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 3)):
                return await self.next.execute_activity(input)


class ContextInterceptor(Interceptor):
    """Binds the activity's identity and correlation id to the log context of each execution."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the activity inbound chain (called by the worker)."""
        return _ContextActivityInbound(next)
