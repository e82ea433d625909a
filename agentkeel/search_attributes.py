"""The platform's custom search attributes, defined once.

The server start (`keel server`), `temporal-dev.yml`, the test fixtures and the
workflows all read this module, so the attribute list cannot drift.
"""

from __future__ import annotations

from enum import StrEnum

from temporalio.common import SearchAttributeKey


class SagaStatus(StrEnum):
    """Lifecycle of an agent saga, as shown in `KeelStatus`."""

    RUNNING = "Running"
    AWAITING_REVIEW = "AwaitingReview"
    COMPENSATING = "Compensating"
    COMPLETED = "Completed"
    REJECTED = "Rejected"
    COMPENSATED = "Compensated"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TERMINATED = "Terminated"
    """Never upserted by a run: Temporal ended it (`temporal workflow terminate`); clients show it."""
    TIMED_OUT = "TimedOut"
    """Never upserted by a run: its workflow execution timeout passed; clients show it."""

    @property
    def is_final(self) -> bool:
        """Whether a run in this status has ended."""
        return self in _FINAL


_FINAL = {
    SagaStatus.COMPLETED,
    SagaStatus.REJECTED,
    SagaStatus.COMPENSATED,
    SagaStatus.FAILED,
    SagaStatus.CANCELLED,
    SagaStatus.TERMINATED,
    SagaStatus.TIMED_OUT,
}

KEEL_STATUS = SearchAttributeKey.for_keyword("KeelStatus")
KEEL_AGENT = SearchAttributeKey.for_keyword("KeelAgent")
KEEL_TEAM = SearchAttributeKey.for_keyword("KeelTeam")
KEEL_CORRELATION_ID = SearchAttributeKey.for_keyword("KeelCorrelationId")
KEEL_COST_USD = SearchAttributeKey.for_float("KeelCostUsd")
KEEL_TOKENS = SearchAttributeKey.for_int("KeelTokens")
KEEL_ESCALATED = SearchAttributeKey.for_bool("KeelEscalated")
"""Set when a review timed out and was escalated: `KeelEscalated=true` finds runs that need a person now."""

ALL_KEYS: tuple[SearchAttributeKey, ...] = (
    KEEL_STATUS,
    KEEL_AGENT,
    KEEL_TEAM,
    KEEL_CORRELATION_ID,
    KEEL_COST_USD,
    KEEL_TOKENS,
    KEEL_ESCALATED,
)

_CLI_TYPE = {
    "KEYWORD": "Keyword",
    "DOUBLE": "Double",
    "INT": "Int",
    "BOOL": "Bool",
}


def cli_types() -> dict[str, str]:
    """Map each attribute name to the type name the `temporal` CLI and server config use.

    Returns:
        `{"KeelStatus": "Keyword", "KeelCostUsd": "Double", ...}` in definition order.
    """
    return {key.name: _CLI_TYPE[key.indexed_value_type.name] for key in ALL_KEYS}


def start_dev_flags() -> list[str]:
    """Flags that make `temporal server start-dev` register every platform attribute."""
    flags: list[str] = []
    for name, kind in cli_types().items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags
