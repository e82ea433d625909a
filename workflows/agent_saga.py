"""`AgentSagaWorkflow`: a team of agents runs one saga.

The workflow wires the rooms together: `RunBook` holds the run's state and
records, `AgentLoop` runs the agents' turns, `ReviewDesk` takes people's
decisions (by the `review` update or the `approve` / `reject` signals) and
`Saga` unwinds. On failure, rejection, cancellation or budget exhaustion the
saga compensates in reverse order.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from agentkeel import errors
    from agentkeel.contracts import (
        ChatMessage,
        ConversationState,
        ResolveTeamRequest,
        ReviewInput,
        ReviewOutcome,
        SagaRequest,
        SagaResult,
        SagaStatusView,
        TeamSpec,
        TranscriptEntry,
    )
    from agentkeel.mcp.resolve import needs_listing
    from agentkeel.names import (
        AGENT_SAGA_WORKFLOW,
        APPROVE_SIGNAL,
        CONVERSATION_QUERY,
        REJECT_SIGNAL,
        RESOLVE_TEAM_ACTIVITY,
        REVIEW_UPDATE,
        STATUS_QUERY,
        TRANSCRIPT_QUERY,
    )
    from agentkeel.search_attributes import (
        KEEL_AGENT,
        KEEL_CORRELATION_ID,
        KEEL_COST_USD,
        KEEL_STATUS,
        KEEL_TEAM,
        KEEL_TOKENS,
        SagaStatus,
    )

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.agent_loop import AgentLoop
from agentkeel.workflows.failures import Halt, describe_failure
from agentkeel.workflows.optional import mcp_tools
from agentkeel.workflows.policies import RESOLVE_RETRY, RESOLVE_START_TO_CLOSE
from agentkeel.workflows.review import ReviewDesk
from agentkeel.workflows.runbook import RunBook, initial_state

_COALESCED_ATTRIBUTES = "coalesce-search-attributes"
"""Patch id: search attributes written once per workflow task, only when changed (histories
recorded before it replay with one upsert per change)."""
_EXECUTION_KEYS = "execution-scoped-keys"
"""Patch id: idempotency keys are `<workflow id>:<first run id>:<step>`, unique to one saga execution
(before it, `<workflow id>:<step>`, which a run reusing a closed run's id shared with that run)."""
_CONVERSATION_STORE = "conversation-store"
"""Patch id: the conversation lives in the conversation store; the run holds its head reference
(before it, whole conversations went into every `call_llm` input and were compacted to the goal
and the last 40 messages at continue-as-new)."""
_FAILED_OUTCOMES = "failed-outcomes"
"""Patch id: runs that did not reach their goal end as Temporal *Failed* with a typed error."""
_OUTCOME_ERRORS = {
    SagaStatus.REJECTED: errors.SAGA_REJECTED,
    SagaStatus.COMPENSATED: errors.SAGA_COMPENSATED,
    SagaStatus.FAILED: errors.SAGA_FAILED,
}


@workflow.defn(name=AGENT_SAGA_WORKFLOW)
class AgentSagaWorkflow:
    """A team of agents working towards one goal, as a saga with human review."""

    @workflow.init
    def __init__(self, request: SagaRequest) -> None:
        self._book = RunBook(request, initial_state(request), pending_review=lambda: self._desk.pending)
        self._desk = ReviewDesk(
            self._book,
            policy=lambda: self._book.team.review,
            workflow_id=workflow.info().workflow_id,
            payload_converter=workflow.payload_converter(),
        )

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: SagaRequest) -> SagaResult:
        """Run the team until a final answer, a rejection, a failure or a cancellation."""
        book = self._book
        self._decide_patches()
        try:
            if book.state.team is None:
                book.state.team = await self._resolve_team(request)
                book.state.active_agent = book.state.team.entry
            if needs_listing(book.state.team):
                book.state.team = await mcp_tools().list_team_tools(
                    book.state.team
                )  # once, kept in the state
            self._announce()
            book.output = await AgentLoop(book, self._desk).run()
            book.set_status(SagaStatus.COMPLETED)
            return book.result(SagaStatus.COMPLETED)
        except asyncio.CancelledError:
            book.last_error = "cancelled"
            await self._unwind(final_ok=SagaStatus.CANCELLED, final_nothing=SagaStatus.CANCELLED)
            raise
        except Halt as halt:
            return await self._halted(halt)

    def _decide_patches(self) -> None:
        # Patch markers are commands: their order here is part of every recorded history.
        state = self._book.state
        self._book.attrs.coalesce = workflow.patched(_COALESCED_ATTRIBUTES)
        if state.key_scope is None:
            info = workflow.info()
            scoped = workflow.patched(_EXECUTION_KEYS)
            state.key_scope = (
                f"{info.workflow_id}:{info.first_execution_run_id}" if scoped else info.workflow_id
            )
        if state.conversation is None and workflow.patched(_CONVERSATION_STORE):
            # A run continued from one before the store carries its (compacted) messages: they
            # become the first pending messages, stored by the first turn.
            state.conversation = ConversationState(pending=list(state.messages))
            state.messages = []

    async def _halted(self, halt: Halt) -> SagaResult:
        self._book.last_error = halt.reason
        workflow.logger.warning("saga halted", extra={"reason": halt.reason})
        final_nothing = SagaStatus.REJECTED if halt.rejected else SagaStatus.FAILED
        status = await self._unwind(final_ok=SagaStatus.COMPENSATED, final_nothing=final_nothing)
        result = self._book.result(status, reason=halt.reason)
        if workflow.patched(_FAILED_OUTCOMES):
            # The goal was not reached: say so in Temporal itself (UI list, ExecutionStatus
            # queries, the SDK's metrics), with the whole result in the error's details.
            raise ApplicationError(
                f"{status.value}: {halt.reason}", result, type=_OUTCOME_ERRORS[status], non_retryable=True
            ) from None
        return result

    async def _resolve_team(self, request: SagaRequest) -> TeamSpec:
        try:
            return await workflow.execute_activity(
                RESOLVE_TEAM_ACTIVITY,
                ResolveTeamRequest(name=str(request.team_name)),
                result_type=TeamSpec,
                start_to_close_timeout=RESOLVE_START_TO_CLOSE,
                retry_policy=RESOLVE_RETRY,
                summary=f"resolve team {request.team_name}",
            )
        except ActivityError as exc:
            raise Halt(f"cannot resolve team {request.team_name!r}: {describe_failure(exc)}") from None

    def _announce(self) -> None:
        book, state = self._book, self._book.state
        book.attrs.set(
            KEEL_STATUS.value_set(book.status.value),
            KEEL_TEAM.value_set(book.team.name),
            KEEL_AGENT.value_set(state.active_agent),
            KEEL_CORRELATION_ID.value_set(state.correlation_id),
            KEEL_TOKENS.value_set(state.tokens),
            KEEL_COST_USD.value_set(round(state.cost_usd, 6)),
        )
        if state.runs == 1:
            book.note(f"goal: {book.request.goal}")
            book.add_message(ChatMessage(role="user", content=book.request.goal))
        workflow.logger.info(
            "saga started",
            extra={
                "team": book.team.name,
                "agent": state.active_agent,
                "correlation_id": state.correlation_id,
            },
        )
        book.update_details()

    async def _unwind(self, *, final_ok: SagaStatus, final_nothing: SagaStatus) -> SagaStatus:
        book = self._book
        had_work = len(book.saga) > 0
        self._desk.close()
        if had_work:
            book.waiting_for = "compensations"
            book.set_status(SagaStatus.COMPENSATING)  # writes the details, with what it waits for
        outcome = await book.saga.compensate()
        book.waiting_for = None
        if outcome.uncompensated:
            status = SagaStatus.FAILED
            book.last_error = f"left uncompensated: {', '.join(outcome.uncompensated)}"
        else:
            status = final_ok if had_work else final_nothing
        book.uncompensated = outcome.uncompensated
        book.set_status(status)
        return status

    # ------------------------------------------------------------------ human review

    @workflow.update(name=REVIEW_UPDATE)
    async def review(self, decision: ReviewInput) -> ReviewOutcome:
        """Approve, reject or edit-and-approve the pending review; returns what the run did."""
        return await self._desk.decide(decision)

    @review.validator
    def _validate_review(self, decision: ReviewInput) -> None:
        self._desk.validate(decision)

    @workflow.signal(name=APPROVE_SIGNAL)
    def approve(self, payload: RawValue = None) -> None:  # type: ignore[assignment]
        """Approve the pending review (payload: reviewer, comment, optional request_id)."""
        self._desk.signal("approve", payload)

    @workflow.signal(name=REJECT_SIGNAL)
    def reject(self, payload: RawValue = None) -> None:  # type: ignore[assignment]
        """Reject the pending review (payload: reviewer, reason, optional request_id)."""
        self._desk.signal("reject", payload)

    # ------------------------------------------------------------------ queries

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> SagaStatusView:
        """Where the run is: status, active agent, pending review, spend, compensations, errors."""
        return self._book.status_view()

    @workflow.query(name=CONVERSATION_QUERY)
    def conversation(self) -> ConversationState | None:
        """The stored conversation's head and the messages since (None for runs before the store)."""
        return self._book.state.conversation

    @workflow.query(name=TRANSCRIPT_QUERY)
    def transcript(self) -> list[TranscriptEntry]:
        """Messages, tool calls, handoffs and decisions, in order."""
        return list(self._book.state.transcript)
