"""How a run's outcome reads from Temporal: the `SagaResult` of every ending.

Runs that reach their goal complete with a `SagaResult`. Runs that do not
(rejected, compensated, failed) end Temporal *Failed*, so the UI, `ExecutionStatus`
queries and the SDK's metrics tell the truth, with a typed, non-retryable
`ApplicationError` (`SagaRejected`, `SagaCompensated`, `SagaFailed`) whose first
detail is the whole `SagaResult`. These helpers give callers that hold a plain
Temporal handle the result either way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.contracts import SagaResult


def saga_result_of(exc: WorkflowFailureError) -> SagaResult | None:
    """The `SagaResult` a run that did not reach its goal carries in its failure, else None."""
    cause = exc.cause
    if not isinstance(cause, ApplicationError) or cause.type not in errors.SAGA_OUTCOMES:
        return None
    if not cause.details:
        return None
    try:
        return SagaResult.model_validate(cause.details[0])
    except ValidationError:
        return None


async def saga_result(handle: WorkflowHandle[Any, Any]) -> SagaResult:
    """Wait for an `AgentSagaWorkflow` run and return its `SagaResult`, whatever the outcome.

    Raises:
        WorkflowFailureError: The run ended without a result (cancelled, terminated, timed out).
    """
    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        failed = saga_result_of(exc)
        if failed is None:
            raise
        return failed
    return result if isinstance(result, SagaResult) else SagaResult.model_validate(result)
