"""`StepReviewer`: a step of the agent loop waits at the `ReviewDesk` for a person's decision.

Used for risky tool calls, final answers under review and budget overruns: it opens a
`ReviewRequest`, waits, records the decision (reviews, transcript, steps, status) and
raises `Halt` when the step was rejected.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import ReviewKind, ReviewOutcome, ReviewRecord, ReviewRequest
    from agentkeel.search_attributes import SagaStatus

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.failures import Halt
from agentkeel.workflows.review import ReviewDecision, ReviewDesk, describe_request
from agentkeel.workflows.runbook import RunBook


class StepReviewer:
    """Puts a step of the run before a person.

    Args:
        book: The run's state and records.
        desk: Where the decision arrives.
    """

    def __init__(self, book: RunBook, desk: ReviewDesk) -> None:
        self._book = book
        self._state = book.state
        self._desk = desk

    async def review(
        self,
        kind: ReviewKind,
        agent: str,
        *,
        tool: str | None = None,
        arguments: dict[str, Any] | None = None,
        reasoning: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> ReviewRecord:
        """Wait for a person's decision on a step; returns it when approved.

        Raises:
            Halt: The step was rejected, or nobody decided before the deadline.
        """
        state = self._state
        request = ReviewRequest(
            request_id=f"rv-{state.step + 1}-{str(workflow.uuid4())[:8]}",
            kind=kind,
            agent=agent,
            tool=tool,
            arguments=arguments or {},
            reasoning=reasoning,
            tokens=state.tokens,
            cost_usd=round(state.cost_usd, 6),
            requested_at=workflow.now(),
            parameters=parameters,
        )
        self._desk.open(request)
        self._book.waiting_for = f"a reviewer: {describe_request(request)} (review {request.request_id})"
        self._book.set_status(SagaStatus.AWAITING_REVIEW)
        workflow.logger.info("awaiting review", extra={"request_id": request.request_id, "tool": tool})
        decision = await self._desk.wait_for_decision()
        return self._apply_decision(request, decision)

    def _apply_decision(self, request: ReviewRequest, decision: ReviewDecision) -> ReviewRecord:
        book, state = self._book, self._state
        record = ReviewRecord(
            request_id=request.request_id,
            kind=request.kind,
            tool=request.tool,
            decision=decision.decision,
            reviewer=decision.reviewer,
            comment=decision.comment,
            arguments=decision.arguments,
            via=decision.via,
            at=workflow.now(),
        )
        state.reviews.append(record)
        self._desk.close()
        book.waiting_for = None
        book.transcript_add(
            "decision",
            agent=request.agent,
            content=decision.comment,
            data={
                "request_id": request.request_id,
                "decision": decision.decision,
                "reviewer": decision.reviewer,
                **({"arguments": decision.arguments} if decision.arguments is not None else {}),
            },
        )
        state.step += 1
        what = request.tool or request.kind
        book.record(
            "review", request.agent, f"review {what}", detail=f"{decision.decision} by {decision.reviewer}"
        )
        approved = decision.decision in ("approve", "edit")
        book.set_status(SagaStatus.RUNNING if approved else SagaStatus.COMPENSATING)
        message = (
            "approved: the run continues" if approved else "rejected: compensating the steps already done"
        )
        self._desk.settle(
            ReviewOutcome(
                request_id=request.request_id, decision=decision.decision, status=book.status, message=message
            )
        )
        if not approved:
            why = decision.comment or "no reason given"
            raise Halt(f"{_step_label(request)} rejected by {decision.reviewer}: {why}", rejected=True)
        return record


def _step_label(request: ReviewRequest) -> str:
    """`charge_card({"amount_usd": 12})`, `final answer` or `budget`: what a rejection stopped."""
    if request.tool:
        return f"{request.tool}({json.dumps(request.arguments, sort_keys=True)})"
    return request.kind.replace("_", " ")
