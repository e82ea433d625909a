"""Deciding a run's reviews: the `review` update (one RPC), and the fire-and-forget signals.

An approval, rejection or edit is sent straight to the run's `review` update; its
validator picks the pending request and is the one place that says no, so the client
asks nothing first. Only a client that signs its decisions reads the pending request
id first (one status query): the signature covers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError
from temporalio.client import WorkflowHandle

from agentkeel.contracts import (
    ApproveSignal,
    RejectSignal,
    ReviewInput,
    ReviewOutcome,
    ReviewRequest,
    SagaResult,
    SagaStatusView,
)
from agentkeel.starters.errors import (
    DecisionRefused,
    InvalidInput,
    ReviewRejected,
    Rpc,
    RunStuck,
    WorkerUnavailable,
    rpc_errors,
)
from agentkeel.starters.reviewer import resolve_reviewer, signature_for
from agentkeel.starters.start_input import check_payload_size
from agentkeel.validation import format_validation_error
from agentkeel.workflows.agent_saga import AgentSagaWorkflow

if TYPE_CHECKING:
    from agentkeel.starters.client import Keel


def _reviewer_name(reviewer: str | None) -> str:
    try:
        return resolve_reviewer(reviewer).name
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


class RunDecisions:
    """The review half of `RunHandle`: approve, reject, edit, and the `approve`/`reject` signals."""

    if TYPE_CHECKING:
        workflow_id: str
        _keel: Keel
        _handle: WorkflowHandle[Any, SagaResult]

        async def status(self, *, worker_wait: timedelta | None = None) -> SagaStatusView: ...

        async def stuck(self) -> str | None: ...

        def _stuck_error(self, worker_error: str) -> RunStuck: ...

    async def pending_review(self) -> ReviewRequest | None:
        """The review the run waits for, or None."""
        return (await self.status()).pending_review

    async def _pending_request_id(self) -> str:
        view = await self.status()
        if view.pending_review is None:
            if view.status.is_final:
                raise ReviewRejected(f"the run has ended ({view.status.value}); nothing to review")
            raise ReviewRejected(f"run {self.workflow_id} is not waiting for a review ({view.status.value})")
        return view.pending_review.request_id

    def _signature(
        self,
        key: Ed25519PrivateKey,
        request_id: str,
        decision: str,
        reviewer: str,
        arguments: dict[str, Any] | None,
    ) -> str | None:
        return signature_for(
            key,
            workflow_id=self.workflow_id,
            request_id=request_id,
            decision=decision,
            reviewer=reviewer,
            arguments=arguments,
        )

    async def _review(
        self,
        decision: str,
        *,
        reviewer: str | None,
        comment: str | None,
        request_id: str | None,
        arguments: dict[str, Any] | None = None,
    ) -> ReviewOutcome:
        name = _reviewer_name(reviewer)
        try:
            review = ReviewInput.model_validate(
                {
                    "decision": decision,
                    "reviewer": name,
                    "comment": comment,
                    "request_id": request_id,
                    "arguments": arguments,
                }
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid decision: {format_validation_error(exc)}") from None
        check_payload_size("review decision", review)
        key = self._keel.signing_key()  # read once: the file is parsed on each call
        if key is not None:
            # The signature covers the request id, so it must be known before signing: the one
            # case that asks the run first. Unsigned, the validator picks the pending request.
            request_id = request_id or await self._pending_request_id()
            review = review.model_copy(
                update={
                    "request_id": request_id,
                    "signature": self._signature(key, request_id, decision, name, arguments),
                }
            )
        outcome = await self._send_review(review)
        if outcome.refused:
            raise DecisionRefused(outcome.message)
        return outcome

    async def _send_review(self, review: ReviewInput) -> ReviewOutcome:
        """The `review` update, and nothing else on the way to an answer.

        Raises:
            ReviewRejected: the validator said no, or the run has ended.
            RunNotFound: no such workflow id.
            RunStuck: no answer because the run's workflow task keeps failing.
            WorkerUnavailable: no answer, and the run is not stuck.
        """
        wait = self._keel.query_timeout
        rpc = Rpc(
            self.workflow_id,
            what=f"the review of {self.workflow_id}",
            no_worker=f"no worker accepted the review of {self.workflow_id} within {wait.total_seconds():g}s",
            decision=True,
        )
        try:
            with rpc_errors(rpc):
                return await self._handle.execute_update(AgentSagaWorkflow.review, review, rpc_timeout=wait)
        except WorkerUnavailable:
            # A stuck run never answers; saying so beats blaming the worker. Only the failure
            # path pays for this look.
            problem = await self.stuck()
            if problem is not None:
                raise self._stuck_error(problem) from None
            raise

    async def approve(
        self, *, reviewer: str | None = None, comment: str | None = None, request_id: str | None = None
    ) -> ReviewOutcome:
        """Approve the pending review through the `review` update and return what the run did.

        Args:
            reviewer: Who decides; None takes `KEEL_REVIEWER`, then the OS user (never "anonymous").
            comment: Why.
            request_id: The review to approve; None lets the run pick the pending one.

        The decision is signed with the key `KEEL_REVIEWER_KEY` names (or `Keel(reviewer_key=...)`).

        Raises:
            ReviewRejected: the run refused (no review pending, wrong request id, run ended).
            DecisionRefused: the run recorded the decision but this reviewer may not decide,
                or the signature is missing or wrong.
            RunNotFound: no such workflow id.
        """
        return await self._review("approve", reviewer=reviewer, comment=comment, request_id=request_id)

    async def reject(
        self, *, reviewer: str | None = None, reason: str | None = None, request_id: str | None = None
    ) -> ReviewOutcome:
        """Reject the pending review: the run compensates what it did and ends.

        Args:
            reviewer: Who decides; None takes `KEEL_REVIEWER`, then the OS user.
            reason: Why.
            request_id: The review to reject; None lets the run pick the pending one.

        Raises:
            ReviewRejected: the run refused the decision.
            DecisionRefused: this reviewer may not decide, or the signature is missing or wrong.
            RunNotFound: no such workflow id.
        """
        return await self._review("reject", reviewer=reviewer, comment=reason, request_id=request_id)

    async def edit(
        self,
        arguments: Mapping[str, Any],
        *,
        reviewer: str | None = None,
        comment: str | None = None,
        request_id: str | None = None,
    ) -> ReviewOutcome:
        """Approve the pending tool call with new arguments (validated against the tool's schema).

        Raises:
            InvalidInput: `arguments` is not a mapping.
            ReviewRejected: the arguments do not fit, or the run refused the decision.
            DecisionRefused: this reviewer may not decide, or the signature is missing or wrong.
            RunNotFound: no such workflow id.
        """
        if not isinstance(arguments, Mapping):
            raise InvalidInput(f"edited arguments must be a JSON object, got {type(arguments).__name__}")
        return await self._review(
            "edit", reviewer=reviewer, comment=comment, request_id=request_id, arguments=dict(arguments)
        )

    async def _signal(self, name: str, payload: BaseModel) -> None:
        check_payload_size(f"{name} signal", payload)
        signal = AgentSagaWorkflow.approve if name == "approve" else AgentSagaWorkflow.reject
        with rpc_errors(Rpc(self.workflow_id)):
            await self._handle.signal(signal, payload)

    async def _signed_signal(
        self, name: str, reviewer: str | None, request_id: str | None, **fields: str | None
    ) -> None:
        who = _reviewer_name(reviewer)
        signature = None
        key = self._keel.signing_key()
        if key is not None:
            request_id = request_id or await self._pending_request_id()
            signature = self._signature(key, request_id, name, who, None)
        model = ApproveSignal if name == "approve" else RejectSignal
        payload = model(reviewer=who, request_id=request_id, signature=signature, **fields)
        await self._signal(name, payload)

    async def signal_approve(
        self, *, reviewer: str | None = None, comment: str | None = None, request_id: str | None = None
    ) -> None:
        """Send the `approve` signal: fire-and-forget (a refusal shows in `status().rejected_signals`)."""
        await self._signed_signal("approve", reviewer, request_id, comment=comment)

    async def signal_reject(
        self, *, reviewer: str | None = None, reason: str | None = None, request_id: str | None = None
    ) -> None:
        """Send the `reject` signal: fire-and-forget."""
        await self._signed_signal("reject", reviewer, request_id, reason=reason)
