"""`RunBook`: the state of one saga run and everything that records it.

The state that outlives a run is one model, `SagaCheckpoint`: the workflow
reads it from its input, changes it in place, and `checkpoint` hands the same
model to continue-as-new, so no field can be carried on one side and forgotten
on the other. What lives only as long as one run (status, what it waits for,
the compensations that ran) sits beside it, as plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import (
        ChatMessage,
        CompensationRecord,
        PendingCompensation,
        RejectedSignal,
        ReviewRequest,
        SagaCheckpoint,
        SagaRequest,
        SagaResult,
        SagaStatusView,
        StepKind,
        StepRecord,
        TeamSpec,
        TranscriptEntry,
    )
    from agentkeel.conversation import estimate_tokens
    from agentkeel.search_attributes import KEEL_ESCALATED, KEEL_STATUS, SagaStatus

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.attributes import SearchAttributeWriter
from agentkeel.workflows.conversation import compact_messages
from agentkeel.workflows.review import describe_request
from agentkeel.workflows.saga import Saga

TRANSCRIPT_KEEP = 400
"""Transcript entries carried across continue-as-new (earlier runs keep the full record)."""
STEPS_KEEP = 400
"""Step records carried across continue-as-new (earlier runs keep the full record), so what a
long run carries does not grow with its length."""


def initial_state(request: SagaRequest) -> SagaCheckpoint:
    """The state a run starts from: its input's checkpoint after a continue-as-new, else a fresh one."""
    cp = request.checkpoint
    # `workflow.uuid4` only when there is no correlation id: each call moves the run's
    # deterministic random sequence, which later review request ids are drawn from.
    correlation_id = (cp.correlation_id if cp else request.correlation_id) or str(workflow.uuid4())
    if cp is not None:
        return cp.model_copy(deep=True, update={"correlation_id": correlation_id})
    return SagaCheckpoint(
        team=request.team,
        correlation_id=correlation_id,
        active_agent=request.team.entry if request.team else "",
    )


class RunBook:
    """The run's state, status and records: steps, transcript, search attributes, UI details.

    Args:
        request: The run's input.
        state: What the run carries (from `initial_state`).
        pending_review: The review a person must decide now, if any (shown first in the details).
    """

    def __init__(
        self,
        request: SagaRequest,
        state: SagaCheckpoint,
        *,
        pending_review: Callable[[], ReviewRequest | None],
    ) -> None:
        self.request = request
        self.state = state
        self.saga = Saga(on_record=self.compensation_done)
        for pending in state.compensations:
            self.saga.add(pending.name, pending.activity, pending.request, step=pending.step)
        # While the run lives the saga holds the stack; `checkpoint` writes it back.
        state.compensations = []
        self.attrs = SearchAttributeWriter(coalesce=False)  # decided by a patch in the workflow's `run`
        self.status = SagaStatus.RUNNING
        self.waiting_for: str | None = None
        self.last_error: str | None = None
        self.output: str | None = None
        self.compensations: list[CompensationRecord] = []
        self.uncompensated: list[str] = []
        self._pending_review = pending_review

    @property
    def team(self) -> TeamSpec:
        """The resolved team (resolved before the agent loop starts)."""
        assert self.state.team is not None, "team is resolved before the loop starts"
        return self.state.team

    def key(self, step: int) -> str:
        """The idempotency key of `step`: unique to this saga execution, stable across retries."""
        return f"{self.state.key_scope}:{step}"

    def checkpoint(self) -> SagaCheckpoint:
        """What continue-as-new carries: the state, its conversation compacted, and the saga's stack."""
        state = self.state
        return state.model_copy(
            update={
                "messages": compact_messages(state.messages),
                "compensations": [
                    PendingCompensation(step=c.step, name=c.name, activity=c.activity_name, request=c.arg)
                    for c in self.saga.pending
                ],
                "transcript": state.transcript[-TRANSCRIPT_KEEP:],
                "steps": state.steps[-STEPS_KEEP:],
                "runs": state.runs + 1,
            }
        )

    # ------------------------------------------------------------------ records

    def set_status(self, status: SagaStatus) -> None:
        """Change the run's status, in the search attributes at once and in the UI details."""
        self.status = status
        self.attrs.set(KEEL_STATUS.value_set(status.value))
        self.attrs.flush()
        self.update_details()

    def add_message(self, message: ChatMessage, *, size: int | None = None) -> None:
        """Add a message to the conversation the agents see.

        Args:
            message: The message.
            size: Bytes of its stored content, when `message` holds a reference and a preview.
        """
        conversation = self.state.conversation
        if conversation is None:
            self.state.messages.append(message)
            return
        # Stored by the next LLM turn; only the head and these few messages live in history.
        conversation.pending.append(message)
        conversation.pending_tokens += estimate_tokens(message, size)

    def record(
        self,
        kind: StepKind,
        agent: str,
        name: str,
        *,
        step: int | None = None,
        detail: str = "",
        tokens: int = 0,
        cost_usd: float = 0.0,
        started: datetime | None = None,
        provider: str | None = None,
    ) -> None:
        """Add a step to the run's record (the current step unless `step` is given)."""
        now = workflow.now()
        duration = (now - started).total_seconds() * 1000 if started is not None else 0.0
        self.state.steps.append(
            StepRecord(
                step=self.state.step if step is None else step,
                kind=kind,
                agent=agent,
                name=name,
                detail=detail,
                tokens=tokens,
                cost_usd=cost_usd,
                duration_ms=round(duration, 1),
                provider=provider,
                at=now,
            )
        )

    def note(self, text: str, *, agent: str | None = None) -> None:
        """Add a note to the transcript."""
        self.transcript_add("note", agent=agent, content=text)

    def transcript_add(
        self,
        kind: Any,
        *,
        agent: str | None = None,
        role: str | None = None,
        content: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Add an entry to the transcript, at the current step."""
        self.state.transcript.append(
            TranscriptEntry(
                kind=kind, agent=agent, role=role, content=content, data=data or {}, step=self.state.step
            )
        )

    def refuse(self, name: str, payload: str, error: str) -> None:
        """Keep a decision or signal the run could not use, for `status`."""
        workflow.logger.warning("signal refused", extra={"signal": name, "error": error})
        self.state.rejected_signals.append(
            RejectedSignal(name=name, payload=payload, error=error, at=workflow.now())
        )

    def escalate(self, request: ReviewRequest) -> None:
        """Mark the run escalated: `request` went unanswered past its first deadline."""
        self.state.escalated = True
        self.attrs.set(KEEL_ESCALATED.value_set(True))
        self.note(f"review {request.request_id} escalated after timeout")
        self.update_details()
        self.attrs.flush()

    def compensation_done(self, record: CompensationRecord) -> None:
        """Record a compensation that ran (or failed) while the saga unwound."""
        self.compensations.append(record)
        self.transcript_add(
            "compensation",
            content=f"{record.compensation} for {record.name} (step {record.step}): {record.status}",
            data={"status": record.status, "error": record.error},
        )
        self.update_details()

    # ------------------------------------------------------------------ views

    def update_details(self) -> None:
        """Write the run's current details, shown by the Temporal UI."""
        state = self.state
        lines = [
            f"**{self.status.value}** · agent `{state.active_agent}` · step {state.step}",
            f"tokens {state.tokens} · cost ${state.cost_usd:.4f}",
        ]
        pending = self._pending_review()
        if pending is not None:
            # First, so the UI's one-line view of the details says what a person must decide.
            escalated = " (escalated)" if pending.escalated else ""
            lines.insert(0, f"waiting for a reviewer{escalated}: {describe_request(pending)}")
            lines.append(f"review `{pending.request_id}` ({pending.kind})")
        elif self.waiting_for:
            lines.append(f"waiting for: {self.waiting_for}")
        if self.saga.pending:
            lines.append("compensations registered: " + ", ".join(c.name for c in self.saga.pending))
        workflow.set_current_details("\n\n".join(lines))

    def status_view(self) -> SagaStatusView:
        """The `status` query's answer."""
        state = self.state
        return SagaStatusView(
            status=self.status,
            team=state.team.name if state.team else self.request.team_label,
            goal=self.request.goal,
            active_agent=state.active_agent,
            step=state.step,
            turns=state.turns,
            handoffs=state.handoffs,
            pending_review=self._pending_review(),
            tokens=state.tokens,
            cost_usd=round(state.cost_usd, 6),
            correlation_id=state.correlation_id,
            escalated=state.escalated,
            compensations=list(self.compensations),
            completed_steps=[f"{c.name} (step {c.step})" for c in self.saga.pending],
            rejected_signals=list(state.rejected_signals),
            last_error=self.last_error,
            waiting_for=self.waiting_for,
        )

    def result(self, status: SagaStatus, reason: str | None = None) -> SagaResult:
        """The run's result (also the details of the error a run that missed its goal fails with)."""
        state = self.state
        return SagaResult(
            status=status,
            reason=reason,
            output=self.output,
            team=state.team.name if state.team else self.request.team_label,
            final_agent=state.active_agent or None,
            correlation_id=state.correlation_id,
            steps=state.steps,
            compensations=self.compensations,
            uncompensated=list(self.uncompensated),
            reviews=state.reviews,
            tokens=state.tokens,
            cost_usd=round(state.cost_usd, 6),
        )
