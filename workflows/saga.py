"""A reusable saga for Temporal workflows: register a compensation after each step, unwind in reverse.

Use it from any workflow::

    saga = Saga()
    try:
        ref = await workflow.execute_activity(book_hotel, req, start_to_close_timeout=...)
        saga.add("book_hotel", "cancel_hotel", CompensationRequest(...))
        ...
    except BaseException:
        outcome = await saga.compensate()
        ...

Compensations run in reverse order, each retried durably under its own retry
policy, and shielded from cancellation: a cancelled workflow still unwinds
completely. A compensation that fails after its retries is recorded, the
remaining ones still run, and `SagaOutcome.uncompensated` lists what is left,
so nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import CompensationRecord
    from agentkeel.names import activity_name

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.failures import describe_failure
from agentkeel.workflows.policies import (
    COMPENSATION_HEARTBEAT,
    COMPENSATION_RETRY,
    COMPENSATION_START_TO_CLOSE,
)


@dataclass
class Compensation:
    """One registered compensation.

    Attributes:
        step: Step number of the action it undoes.
        name: Label of the action (for example the tool name).
        activity: Activity to run: a registered name or an `@activity.defn` callable.
        arg: The activity's single argument.
        retry_policy: Retry policy of this compensation.
        start_to_close_timeout: Timeout of one attempt.
        summary: Shown in the Temporal UI; defaults to `<activity> (compensation)`.
        label: What the records call the compensation; default the activity's name (an MCP
            compensation runs the activity `temporalio.mcp.<server>.call-tool`: its label is
            `<server>.<tool>`).
    """

    step: int
    name: str
    activity: str | Callable[..., Any]
    arg: Any
    retry_policy: RetryPolicy = field(default_factory=lambda: COMPENSATION_RETRY)
    start_to_close_timeout: timedelta = COMPENSATION_START_TO_CLOSE
    summary: str | None = None
    label: str | None = None

    @property
    def activity_name(self) -> str:
        """The activity's registered name."""
        if isinstance(self.activity, str):
            return self.activity
        return activity_name(self.activity, default="compensation")


@dataclass
class SagaOutcome:
    """What unwinding did."""

    records: list[CompensationRecord]
    uncompensated: list[str]

    @property
    def ok(self) -> bool:
        """Every compensation succeeded."""
        return not self.uncompensated


class Saga:
    """A stack of compensations for one workflow run."""

    def __init__(self, *, on_record: Callable[[CompensationRecord], None] | None = None) -> None:
        """Create an empty saga.

        Args:
            on_record: Called after each compensation ran (or failed), for progress views.
        """
        self._stack: list[Compensation] = []
        self._on_record = on_record

    def add(
        self,
        name: str,
        activity: str | Callable[..., Any],
        arg: Any,
        *,
        step: int = 0,
        retry_policy: RetryPolicy | None = None,
        start_to_close_timeout: timedelta | None = None,
        summary: str | None = None,
    ) -> Compensation:
        """Register the compensation of a step that is about to run or has run.

        Register *before* running a step whose result could be lost (the
        compensation must then tolerate "nothing to undo"), or right after it.
        """
        comp = Compensation(
            step=step,
            name=name,
            activity=activity,
            arg=arg,
            retry_policy=retry_policy or COMPENSATION_RETRY,
            start_to_close_timeout=start_to_close_timeout or COMPENSATION_START_TO_CLOSE,
            summary=summary,
        )
        self._stack.append(comp)
        return comp

    def discard(self, comp: Compensation) -> None:
        """Forget a compensation whose step turned out to have done nothing."""
        self._stack.remove(comp)

    @property
    def pending(self) -> list[Compensation]:
        """Registered compensations not yet run, oldest first."""
        return list(self._stack)

    def __len__(self) -> int:
        return len(self._stack)

    async def compensate(self) -> SagaOutcome:
        """Run every registered compensation in reverse order, shielded from cancellation.

        Returns:
            The records of what ran, and the labels of steps left uncompensated.
        """
        task = asyncio.ensure_future(self._unwind())
        while True:
            try:
                # A cancellation request arriving now must not stop the unwinding:
                # shield the task and keep waiting for it.
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    return task.result()
                workflow.logger.warning("cancellation requested while compensating; compensations go on")

    async def _unwind(self) -> SagaOutcome:
        records: list[CompensationRecord] = []
        uncompensated: list[str] = []
        while self._stack:
            comp = self._stack.pop()
            label = f"{comp.name} (step {comp.step})"
            try:
                await workflow.execute_activity(
                    comp.activity,
                    comp.arg,
                    start_to_close_timeout=comp.start_to_close_timeout,
                    heartbeat_timeout=COMPENSATION_HEARTBEAT,
                    retry_policy=comp.retry_policy,
                    summary=comp.summary or f"{comp.activity_name} (compensation)",
                )
                record = CompensationRecord(
                    step=comp.step,
                    name=comp.name,
                    compensation=comp.label or comp.activity_name,
                    status="done",
                    at=workflow.now(),
                )
            except ActivityError as exc:
                workflow.logger.error(
                    "compensation failed after retries",
                    extra={"compensation": comp.activity_name, "step": comp.step},
                )
                uncompensated.append(label)
                record = CompensationRecord(
                    step=comp.step,
                    name=comp.name,
                    compensation=comp.label or comp.activity_name,
                    status="failed",
                    error=describe_failure(exc),
                    at=workflow.now(),
                )
            records.append(record)
            if self._on_record:
                self._on_record(record)
        return SagaOutcome(records=records, uncompensated=uncompensated)
