"""Stable `ApplicationError` types raised by activities and recognised by workflows and retry policies.

Histories and retry policies bind to these strings: never rename one.
"""

from __future__ import annotations

LLM_RATE_LIMITED = "LLMRateLimited"
"""429 from the provider: retryable, `next_retry_delay` from `Retry-After` or rate-limit reset headers."""
LLM_UNAVAILABLE = "LLMUnavailable"
"""5xx, timeouts, connection errors: retryable; counted by the provider's circuit breaker."""
LLM_BAD_REQUEST = "LLMBadRequest"
"""400/401/403/404/422: non-retryable."""
LLM_CONTEXT_TOO_LONG = "LLMContextTooLong"
"""The conversation does not fit the model's context window: non-retryable."""
LLM_RESPONSE_TOO_LARGE = "LLMResponseTooLarge"
"""The answer would not fit in a Temporal payload: non-retryable."""
CIRCUIT_OPEN = "CircuitOpen"
"""Every provider of the alias chain has an open breaker: retryable after the first one half-opens."""
UNKNOWN_MODEL_ALIAS = "UnknownModelAlias"
"""The agent names a model alias that `keel.toml` does not define: non-retryable."""

TOOL_INVALID_ARGUMENTS = "ToolInvalidArguments"
"""A tool refused its arguments: non-retryable (the workflow returns the error to the model)."""
TOOL_FAILED = "ToolFailed"
"""A tool failed for good (business rule): non-retryable, the saga compensates."""
CONVERSATION_STORE = "ConversationStoreError"
"""The conversation store failed: retryable when unreachable, non-retryable when content is missing
or altered (the run then fails and compensates, instead of retrying forever)."""
UNKNOWN_TEAM = "UnknownTeam"
"""`resolve_team` was asked for a team that is not registered: non-retryable."""

ACTIVITY_NOT_REGISTERED = "NotFoundError"
"""Raised by the Temporal SDK's worker for an activity it does not have: a tool no worker registered."""

SAGA_REJECTED = "SagaRejected"
"""A run's reviewer said no (nothing to undo, or everything undone): the workflow ends Temporal *Failed*."""
SAGA_COMPENSATED = "SagaCompensated"
"""A run failed or was rejected after side effects, all of them compensated: Temporal *Failed*."""
SAGA_FAILED = "SagaFailed"
"""A run failed with nothing to undo, or left side effects uncompensated: Temporal *Failed*."""
SAGA_OUTCOMES: tuple[str, ...] = (SAGA_REJECTED, SAGA_COMPENSATED, SAGA_FAILED)
"""The error types whose details carry the run's full `SagaResult`."""

LLM_NON_RETRYABLE: tuple[str, ...] = (
    LLM_BAD_REQUEST,
    LLM_CONTEXT_TOO_LONG,
    LLM_RESPONSE_TOO_LARGE,
    UNKNOWN_MODEL_ALIAS,
)
TOOL_NON_RETRYABLE: tuple[str, ...] = (TOOL_INVALID_ARGUMENTS, TOOL_FAILED, ACTIVITY_NOT_REGISTERED)

MCP_UNAVAILABLE = "MCPUnavailable"
"""An MCP server could not be reached (down, connection closed, timed out): retryable."""
MCP_CONFIG = "MCPConfigError"
"""An MCP server's declaration cannot be used on this worker (a missing environment variable)."""
MCP_COMPENSATION_UNRESOLVED = "MCPCompensationUnresolved"
"""An MCP compensation needs the original call's result, which never came back."""
