"""Limits the agent loop keeps: the spending budget, and how long it waits out an LLM outage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from agentkeel import errors
    from agentkeel.contracts import Budget

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.failures import application_cause, describe_failure
from agentkeel.workflows.policies import LLM_OUTAGE_MAX, LLM_OUTAGE_PAUSE

T = TypeVar("T")

LLM_OUTAGE_ERRORS = frozenset({errors.LLM_UNAVAILABLE, errors.CIRCUIT_OPEN, errors.LLM_RATE_LIMITED})
"""Failures that say the provider is away (down, breakers open, throttled), not that the call is bad."""


def budget_problem(budget: Budget, *, tokens: int, cost_usd: float, extensions: int) -> str | None:
    """Why the run may not spend more, or None while it is within its budget.

    Args:
        budget: The team's budget.
        tokens: Tokens spent so far.
        cost_usd: Money spent so far.
        extensions: Extra budgets' worth a reviewer granted (each approval of a budget review is one).
    """
    factor = 1 + extensions
    if budget.max_tokens is not None and tokens >= budget.max_tokens * factor:
        return f"token budget exhausted: {tokens} of {budget.max_tokens * factor} tokens"
    if budget.max_cost_usd is not None and cost_usd >= budget.max_cost_usd * factor:
        return f"cost budget exhausted: ${cost_usd:.4f} of ${budget.max_cost_usd * factor:.4f}"
    return None


def is_outage(exc: BaseException) -> bool:
    """Whether an activity failed for want of a provider rather than for a bad call."""
    cause = application_cause(exc)
    return cause is not None and cause.type in LLM_OUTAGE_ERRORS


async def through_outages(
    attempt: Callable[[], Awaitable[T]], *, on_failure: Callable[[str], None], on_wait: Callable[[], None]
) -> T:
    """Run `attempt` until it succeeds; while the provider is away, wait on a durable timer and retry.

    An outage shorter than `LLM_OUTAGE_MAX` costs a run time, not the work it has done.

    Args:
        attempt: One activity call (its own retry policy runs inside it).
        on_failure: Told the description of every failure, before the decision to wait.
        on_wait: Called before each pause, to show that the run waits for the provider.

    Raises:
        ActivityError: A failure that is not an outage, or an outage that lasted too long
            (tell them apart with `is_outage`).
    """
    outage_started = None
    while True:
        try:
            return await attempt()
        except ActivityError as exc:
            on_failure(describe_failure(exc))
            if not is_outage(exc):
                raise
            outage_started = outage_started or workflow.now()
            if workflow.now() - outage_started >= LLM_OUTAGE_MAX:
                raise
            on_wait()
            await workflow.sleep(LLM_OUTAGE_PAUSE, summary="wait for LLM provider")
