"""Human review: who may decide, how a request is described, and the desk that waits for a decision.

`authority_problem` and `describe_request` are pure functions of the review policy
and the request, so the update validator, the update handler and the signal
handlers all say no for the same reasons. `ReviewDesk` is the review state machine
of one run: it opens a request, takes decisions by update or signal, waits for one
until the deadline (escalating once if the policy says so), and remembers the
outcome of every request so duplicate decisions get the same answer.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.converter import PayloadConverter

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from agentkeel.contracts import (
        ApproveSignal,
        RejectSignal,
        ReviewInput,
        ReviewOutcome,
        ReviewPolicy,
        ReviewRequest,
    )
    from agentkeel.names import APPROVE_SIGNAL, REJECT_SIGNAL, REVIEW_UPDATE
    from agentkeel.schemas import validation_error
    from agentkeel.search_attributes import SagaStatus
    from agentkeel.signing import decision_message, verify

_AMOUNT_KEYS = ("amount_usd", "amount", "total_usd", "price_usd", "cost_usd")
"""Arguments shown as money in a review's one-line description, first match wins."""
_ARGUMENTS_SHOWN = 80


def authority_problem(
    policy: ReviewPolicy,
    *,
    workflow_id: str,
    request: ReviewRequest,
    decision: str,
    reviewer: str,
    arguments: dict[str, Any] | None,
    signature: str | None,
) -> str | None:
    """Why this reviewer's decision may not be applied, or None when it may.

    Args:
        policy: The team's review policy (`reviewers` patterns, `reviewer_keys`).
        workflow_id: The run's workflow id (part of what a signature covers).
        request: The pending review.
        decision: `approve`, `reject` or `edit`.
        reviewer: Who decided.
        arguments: Edited arguments (for `edit`), else None.
        signature: Base64 Ed25519 signature, when the decision came signed.
    """
    if policy.reviewers and not any(fnmatch.fnmatchcase(reviewer, p) for p in policy.reviewers):
        return f"reviewer {reviewer!r} may not decide for this team (allowed: {', '.join(policy.reviewers)})"
    if not policy.reviewer_keys:
        return None
    if not signature:
        return "this team accepts signed decisions only (sign with the key named by KEEL_REVIEWER_KEY)"
    message = decision_message(
        workflow_id=workflow_id,
        request_id=request.request_id,
        decision=decision,
        reviewer=reviewer,
        arguments=arguments,
    )
    # cryptography's Rust core imports Python modules lazily on its first verification; inside
    # the sandbox that import must pass through, or the extension module is loaded twice.
    with workflow.unsafe.imports_passed_through():
        signer = verify(policy.reviewer_keys, message, signature)
    if signer is None:
        return (
            "the signature is not one of the team's reviewer keys over this run, review request, "
            "decision, reviewer and arguments"
        )
    return None


def short_arguments(arguments: dict[str, Any]) -> str:
    """A money amount when the arguments hold one (`$1,123.50`), else `key=value` pairs, cut short."""
    for key in _AMOUNT_KEYS:
        value = arguments.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"${value:,.2f}"
    text = ", ".join(f"{k}={json.dumps(v, sort_keys=True, default=str)}" for k, v in arguments.items())
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 1] + "…"


def describe_request(request: ReviewRequest) -> str:
    """One line for people: `planner wants charge_card $1,123.50`."""
    if request.kind == "tool":
        shown = short_arguments(request.arguments)
        return f"{request.agent} wants {request.tool}" + (f" {shown}" if shown else "")
    if request.kind == "final_answer":
        return f"{request.agent} wants to give its final answer"
    return f"{request.agent} wants to go over budget ({request.reasoning})"


SignalDecision = Literal["approve", "reject"]
_SIGNAL_MODELS: dict[SignalDecision, type[ApproveSignal] | type[RejectSignal]] = {
    "approve": ApproveSignal,
    "reject": RejectSignal,
}
_SIGNAL_NAMES: dict[SignalDecision, str] = {"approve": APPROVE_SIGNAL, "reject": REJECT_SIGNAL}
_PAYLOAD_SHOWN = 500
"""Characters of a refused decision's payload kept for `status`."""


@dataclass
class ReviewDecision:
    """A decision the desk accepted for the pending request (or the timeout's)."""

    request_id: str
    decision: Literal["approve", "reject", "edit", "timeout"]
    reviewer: str
    comment: str | None
    arguments: dict[str, Any] | None
    via: Literal["update", "signal", "timeout"]
    signature: str | None = None


class ReviewHost(Protocol):
    """What the desk needs from the run it serves."""

    @property
    def status(self) -> SagaStatus:
        """The run's status (a decision for an ended run is not applied)."""
        ...

    def refuse(self, name: str, payload: str, error: str) -> None:
        """Keep a decision the desk could not use, for `status` and the audit trail."""
        ...

    def escalate(self, request: ReviewRequest) -> None:
        """Mark the run escalated: its review went unanswered past the first deadline."""
        ...


def signal_payload_problem(exc: Exception) -> str:
    """What is wrong with a signal's payload, in the words the CLI and the UI show."""
    if not isinstance(exc, ValidationError):
        return f"malformed payload: {exc}"
    problems = "; ".join(
        'a decision needs a non-empty reviewer ({"reviewer": "NAME"})'
        if e["loc"] == ("reviewer",)
        else f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
        for e in exc.errors()
    )
    return f"malformed payload: {problems}"


class ReviewDesk:
    """The review state machine of one run.

    Args:
        host: The run (its status, where refusals and escalations are recorded).
        policy: The team's review policy; a callable because the team may be resolved after start.
        workflow_id: The run's workflow id (part of what a signed decision covers).
        payload_converter: Decodes signal payloads (the workflow's converter).
    """

    def __init__(
        self,
        host: ReviewHost,
        *,
        policy: Callable[[], ReviewPolicy],
        workflow_id: str,
        payload_converter: PayloadConverter,
    ) -> None:
        self._host = host
        self._policy = policy
        self._workflow_id = workflow_id
        self._converter = payload_converter
        self.pending: ReviewRequest | None = None
        """The request a person must decide, if any."""
        self.decision: ReviewDecision | None = None
        """The accepted decision for `pending`, until the run has applied it."""
        self.outcomes: dict[str, ReviewOutcome] = {}
        """What the run did with each decided request, by request id."""

    # ------------------------------------------------------------------ the run's side

    def open(self, request: ReviewRequest) -> None:
        """Make `request` the pending one; decisions are taken from now on."""
        self.pending = request
        self.decision = None

    def close(self) -> None:
        """No request is pending any more (decided, or the run is unwinding)."""
        self.pending = None
        self.decision = None

    def settle(self, outcome: ReviewOutcome) -> None:
        """Record what the run did with a decision; the waiting `review` update returns it."""
        self.outcomes[outcome.request_id] = outcome

    async def wait_for_decision(self) -> ReviewDecision:
        """Wait for a decision on the pending request until its deadline, escalating once if asked to.

        Returns:
            The decision, or a `timeout` decision (which the run treats as a rejection).
        """
        request = self.pending
        assert request is not None, "a request is opened before waiting"
        policy = self._policy()
        decided = await self._wait(timedelta(seconds=policy.timeout_s), "review deadline")
        if decided is not None:
            return decided
        if policy.on_timeout == "escalate":
            request.escalated = True
            workflow.logger.warning(
                "review timed out: escalated", extra={"request_id": request.request_id, "tool": request.tool}
            )
            self._host.escalate(request)
            decided = await self._wait(
                timedelta(seconds=policy.escalation_timeout_s), "escalated review deadline"
            )
            if decided is not None:
                return decided
        return ReviewDecision(
            request.request_id, "timeout", "timeout", "no decision before the review timeout", None, "timeout"
        )

    async def _wait(self, within: timedelta, summary: str) -> ReviewDecision | None:
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=within, timeout_summary=summary
            )
        except TimeoutError:
            return None
        return self.decision

    # ------------------------------------------------------------------ the `review` update

    def validate(self, decision: ReviewInput) -> None:
        """The update's validator: refuses (back to the caller) a decision that cannot apply.

        Raises:
            ValueError: The run has ended, nothing or another request is pending, a decision
                is already being applied, or edited arguments do not fit the schema.
        """
        if decision.request_id is not None and decision.request_id in self.outcomes:
            return  # a duplicate: the handler answers it with the recorded outcome
        if self._host.status.is_final:
            raise ValueError(f"the run has ended ({self._host.status.value}); nothing to review")
        pending = self.pending
        if pending is None:
            raise ValueError("no review is pending")
        if decision.request_id is not None and decision.request_id != pending.request_id:
            raise ValueError(
                f"review {decision.request_id!r} is not the pending one (pending: {pending.request_id!r})"
            )
        if self.decision is not None:
            raise ValueError(f"review {pending.request_id!r} already has a decision being applied")
        if decision.decision == "edit":
            if pending.parameters is None:
                raise ValueError(f"a {pending.kind} review cannot be edited, only approved or rejected")
            problem = validation_error(pending.parameters, decision.arguments)
            if problem:
                raise ValueError(
                    f"edited arguments do not fit the schema of {pending.tool or pending.kind}: {problem}"
                )

    async def decide(self, decision: ReviewInput) -> ReviewOutcome:
        """The update's handler: apply a validated decision and return what the run did with it."""
        if decision.request_id in self.outcomes:
            return self.outcomes[decision.request_id]  # a duplicate: same answer again
        assert self.pending is not None, "the validator let through a decision with nothing pending"
        request_id = self.pending.request_id
        # Refusals of authority are accepted updates, not validator rejections: a decision
        # from someone who may not decide is an audit event and must stay in the history.
        problem = self.authority_problem(
            decision.decision, decision.reviewer, decision.arguments, decision.signature
        )
        if problem is not None:
            payload = decision.model_dump_json(exclude={"signature"})[:_PAYLOAD_SHOWN]
            self._host.refuse(REVIEW_UPDATE, payload, problem)
            return ReviewOutcome(
                request_id=request_id,
                decision=decision.decision,
                status=self._host.status,
                message=f"refused: {problem}",
                refused=True,
            )
        self.decision = ReviewDecision(
            request_id=request_id,
            decision=decision.decision,
            reviewer=decision.reviewer,
            comment=decision.comment,
            arguments=decision.arguments,
            via="update",
            signature=decision.signature,
        )
        await workflow.wait_condition(lambda: request_id in self.outcomes or self._host.status.is_final)
        if request_id in self.outcomes:
            return self.outcomes[request_id]
        return ReviewOutcome(
            request_id=request_id,
            decision=decision.decision,
            status=self._host.status,
            message=f"the run ended ({self._host.status.value}) before the decision was applied",
        )

    # ------------------------------------------------------------------ the `approve` / `reject` signals

    def signal(self, decision: SignalDecision, payload: RawValue | None) -> None:
        """Take an `approve` or `reject` signal; whatever cannot apply is refused and recorded."""
        name = _SIGNAL_NAMES[decision]
        # Signals are decoded here, not by the SDK: a payload that does not fit would
        # otherwise be dropped with only a log line. Every refusal is kept for `status`.
        text = ""
        try:
            data: Any = {} if payload is None else self._converter.from_payload(payload.payload)
            text = json.dumps(data, default=str)[:_PAYLOAD_SHOWN]
            parsed = _SIGNAL_MODELS[decision].model_validate({} if data is None else data)
        except (ValidationError, ValueError, TypeError) as exc:
            self._host.refuse(name, text, signal_payload_problem(exc))
            return
        pending = self.pending
        if parsed.request_id is not None and parsed.request_id in self.outcomes:
            return  # a duplicate of a decision already applied
        if pending is None:
            self._host.refuse(name, text, "no review is pending")
            return
        if parsed.request_id is not None and parsed.request_id != pending.request_id:
            self._host.refuse(
                name, text, f"request {parsed.request_id!r} is not pending ({pending.request_id!r} is)"
            )
            return
        if self.decision is not None:
            return  # first decision wins; later duplicates are idempotent no-ops
        problem = self.authority_problem(decision, parsed.reviewer, None, parsed.signature)
        if problem is not None:
            self._host.refuse(name, text, problem)
            return
        comment = parsed.comment if isinstance(parsed, ApproveSignal) else parsed.reason
        self.decision = ReviewDecision(
            pending.request_id, decision, parsed.reviewer, comment, None, "signal", parsed.signature
        )

    def authority_problem(
        self, decision: str, reviewer: str, arguments: dict[str, Any] | None, signature: str | None
    ) -> str | None:
        """Why `reviewer` may not decide the pending request, or None when they may."""
        assert self.pending is not None, "authority is checked against a pending request"
        return authority_problem(
            self._policy(),
            workflow_id=self._workflow_id,
            request=self.pending,
            decision=decision,
            reviewer=reviewer,
            arguments=arguments,
            signature=signature,
        )
