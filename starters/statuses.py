"""Run statuses as people read them: Temporal's execution status and the run's own `KeelStatus` together."""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus

from agentkeel.search_attributes import SagaStatus
from agentkeel.starters.errors import InvalidInput

_EXECUTION_STATUS_NAMES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Cancelled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}


def execution_status_name(status: WorkflowExecutionStatus | None) -> str:
    """Temporal's status as its CLI and UI name it (`Running`, `Cancelled`...)."""
    return _EXECUTION_STATUS_NAMES.get(status, "Unknown") if status is not None else "Unknown"


def run_status(keel_status: str | None, execution: WorkflowExecutionStatus | None) -> str:
    """The status to show: `KeelStatus` while running or when final, else Temporal's own outcome.

    A run that was terminated, timed out or crashed never upserted a final `KeelStatus`,
    so its attribute still says `Running`; Temporal's status is the truth then.
    """
    if execution == WorkflowExecutionStatus.RUNNING or execution is None:
        return keel_status or "Running"
    if keel_status in _STATUS_VALUES and SagaStatus(keel_status).is_final:
        return str(keel_status)
    if execution == WorkflowExecutionStatus.COMPLETED:
        return keel_status or "Completed"
    return execution_status_name(execution)


def ended_status(execution: WorkflowExecutionStatus) -> SagaStatus:
    """The status of a run that ended without reporting one of its own (terminated, timed out...)."""
    return {
        WorkflowExecutionStatus.TERMINATED: SagaStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT: SagaStatus.TIMED_OUT,
        WorkflowExecutionStatus.CANCELED: SagaStatus.CANCELLED,
        WorkflowExecutionStatus.COMPLETED: SagaStatus.COMPLETED,
    }.get(execution, SagaStatus.FAILED)


_STATUS_VALUES = {s.value for s in SagaStatus}
TEMPORAL_ONLY = {SagaStatus.TERMINATED: "Terminated", SagaStatus.TIMED_OUT: "TimedOut"}
"""Statuses only Temporal records, with their `ExecutionStatus` names."""


def parse_status(text: str) -> SagaStatus:
    """Read a status name leniently: `AwaitingReview`, `awaiting-review`, `awaiting_review` all work.

    Raises:
        InvalidInput: the name is not a `SagaStatus`.
    """
    wanted = text.replace("-", "").replace("_", "").replace(" ", "").lower()
    for status in SagaStatus:
        if status.value.lower() == wanted:
            return status
    choices = ", ".join(s.value for s in SagaStatus)
    raise InvalidInput(f"unknown status {text!r} (one of: {choices})")
