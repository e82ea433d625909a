"""The Python starter API: start agent sagas, steer them, and find them again.

A script connects once and works with `RunHandle`s::

    from agentkeel.starters.client import Keel

    async with Keel() as keel:
        run = await keel.start("travel", "Book Lisbon to Berlin on 2025-06-01, 2 nights")
        print(run.workflow_id, run.ui_url)
        async for view in run.watch():
            if view.pending_review:
                await run.approve(reviewer="ana", comment="fine")
        print((await run.result()).status)

The connection follows Temporal's own env config (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, profiles) through
`agentkeel.temporal.connect`, with the pydantic data converter.

Everything a user can act on surfaces as a `KeelError` subclass with a
one-line message: `RunNotFound`, `TeamNotFound`, `InvalidInput`,
`ReviewRejected` (the workflow's validator refused a decision), `RunAlreadyExists`,
`RunEnded`, `RunStillRunning`, `RunStuck` (its workflow task keeps failing) and
`WorkerUnavailable` (nobody answered a query or update in time).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionRef
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agentkeel import search_attributes as sa
from agentkeel.contracts import (
    ApproveSignal,
    RejectSignal,
    ReviewInput,
    ReviewOutcome,
    ReviewRequest,
    SagaRequest,
    SagaResult,
    SagaStatusView,
    TeamSpec,
    TranscriptEntry,
)
from agentkeel.names import AGENT_SAGA_WORKFLOW, WORKFLOW_ID_PREFIX
from agentkeel.outcomes import saga_result_of
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings, load_settings
from agentkeel.signing import SigningError
from agentkeel.starters.reviewer import resolve_reviewer, reviewer_key, signature_for
from agentkeel.teams import TeamFileError, load_registry, load_team_file

__all__ = [
    "DecisionRefused",
    "InvalidInput",
    "Keel",
    "KeelError",
    "ReviewRejected",
    "RunAlreadyExists",
    "RunEnded",
    "RunHandle",
    "RunNotFound",
    "RunStillRunning",
    "RunStuck",
    "RunSummary",
    "TeamNotFound",
    "WorkerUnavailable",
    "new_workflow_id",
    "parse_status",
]

QUERY_TIMEOUT = timedelta(seconds=10)
"""How long a query or update waits for a worker to answer before `WorkerUnavailable`."""
CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)
"""Queries on a finished run replay its history on a worker; without one, fall back to the result sooner."""
LISTING_QUERY_TIMEOUT = timedelta(seconds=3)
"""How long `pending` waits for each run's worker: one run whose worker is gone must not
hold up the list (it is shown as unknown)."""
SUMMARY_MAX = 200
"""The UI shows the static summary on one line; longer goals are cut."""
DETAILS_GOAL_MAX = 2000
"""Characters of the goal copied into the UI's details; the whole goal is in the run's input."""
DETAILS_META_MAX = 200
"""Characters of each metadata value copied into the UI's details."""
WATCH_INTERVAL = 0.5
"""Seconds between two status polls of `RunHandle.watch`."""
MAX_DECISION_BYTES = 256 * 1024
"""A review decision or signal bigger than this is refused before it is sent: the server would accept
an oversized update, the worker could not answer it, and the run's workflow task would fail."""
MAX_GOAL_BYTES = 128 * 1024
"""Largest goal accepted (UTF-8 bytes). Temporal refuses payloads over 2 MB (and gRPC messages over
4 MB) with a raw error, and the goal is copied into every LLM call's input and the transcript,
so the limit leaves room for the conversation that grows from it."""
MAX_METADATA_BYTES = 16 * 1024
"""Largest metadata accepted, keys and values together (UTF-8 bytes)."""
MAX_REQUEST_BYTES = 512 * 1024
"""Largest start request accepted as JSON (goal, metadata and an inline team spec together)."""
STUCK_ATTEMPTS = 2
"""A run whose pending workflow task is on this attempt or later has failed a task already;
with a `WorkflowTaskFailed` as its last task outcome it is stuck until a worker can run it."""


# --------------------------------------------------------------------------- errors


class KeelError(Exception):
    """Base of the errors a user can act on; the message is one line meant for people."""


class RunNotFound(KeelError):
    """No run has this workflow id in the namespace."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no run with workflow id {workflow_id!r}")
        self.workflow_id = workflow_id


class TeamNotFound(KeelError):
    """The team name is not registered (and is not a team file)."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown team {name!r} (registered teams: {listed}); or give a team file")
        self.name = name
        self.known = known


class InvalidInput(KeelError):
    """The request is malformed: a bad team file, an empty goal, arguments that are not an object..."""


class ReviewRejected(KeelError):
    """The run refused a review decision; the message is the workflow validator's reason."""


class DecisionRefused(ReviewRejected):
    """The run recorded the decision and did not apply it: the reviewer may not decide, or the
    signature is missing or wrong. `keel status` lists it under refused decisions."""


class RunStuck(KeelError):
    """The run cannot make progress: its workflow task keeps failing (a bug, a bad deployment,
    a worker without the encryption key). `worker_error` is the worker's own message, if known."""

    def __init__(self, message: str, worker_error: str | None = None) -> None:
        super().__init__(message)
        self.worker_error = worker_error


class RunAlreadyExists(KeelError):
    """A run with this workflow id is running, or has run and `reuse_id` was not given."""


class RunEnded(InvalidInput):
    """The run has already ended: it can no longer be cancelled or decided."""


class RunStillRunning(InvalidInput):
    """The run is still going: it cannot be redriven (cancel it first)."""


class WorkerUnavailable(KeelError):
    """No worker answered a query or update in time."""


# --------------------------------------------------------------------------- models


class RunSummary(BaseModel):
    """One run as seen by a visibility query, plus what the `pending`/`failed` views add.

    Attributes:
        workflow_id: The run's workflow id.
        run_id: The latest run id of the workflow id.
        status: `KeelStatus` (a `SagaStatus` value), or Temporal's own status when the run ended
            without setting one (`Terminated`, `TimedOut`, `Cancelled`, `Failed`).
        execution_status: Temporal's execution status (`Running`, `Completed`, `Failed`, ...).
        team: `KeelTeam`.
        agent: `KeelAgent`, the active agent last upserted.
        correlation_id: `KeelCorrelationId`.
        tokens: `KeelTokens`.
        cost_usd: `KeelCostUsd`.
        started_at: When the run started.
        closed_at: When it ended, if it did.
        ui_url: Link to the run in the Temporal Web UI.
        pending_review: For `Keel.pending()`: what the run waits for.
        waiting_for: For `Keel.pending()`: the run's own description of what it waits for.
        reason: For `Keel.failed()`: why the run ended.
        uncompensated: For `Keel.failed()`: steps whose compensation did not succeed.
        stuck: For live runs whose workflow task keeps failing: the worker's error.
    """

    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    run_id: str
    status: str
    execution_status: str
    team: str | None = None
    agent: str | None = None
    correlation_id: str | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    started_at: datetime | None = None
    closed_at: datetime | None = None
    ui_url: str = ""
    pending_review: ReviewRequest | None = None
    waiting_for: str | None = None
    reason: str | None = None
    uncompensated: list[str] = Field(default_factory=list)
    stuck: str | None = None


_EXECUTION_STATUS_NAMES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Cancelled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}


def _execution_status_name(status: WorkflowExecutionStatus | None) -> str:
    return _EXECUTION_STATUS_NAMES.get(status, "Unknown") if status is not None else "Unknown"


def _run_status(keel_status: str | None, execution: WorkflowExecutionStatus | None) -> str:
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
    return _execution_status_name(execution)


def _ended_status(execution: WorkflowExecutionStatus) -> SagaStatus:
    """The status of a run that ended without reporting one of its own (terminated, timed out...)."""
    return {
        WorkflowExecutionStatus.TERMINATED: SagaStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT: SagaStatus.TIMED_OUT,
        WorkflowExecutionStatus.CANCELED: SagaStatus.CANCELLED,
        WorkflowExecutionStatus.COMPLETED: SagaStatus.COMPLETED,
    }.get(execution, SagaStatus.FAILED)


_STATUS_VALUES = {s.value for s in SagaStatus}
_TEMPORAL_ONLY = {SagaStatus.TERMINATED: "Terminated", SagaStatus.TIMED_OUT: "TimedOut"}
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


def new_workflow_id(team: str) -> str:
    """A fresh workflow id: `keel-<team>-<12 hex chars>`."""
    return f"{WORKFLOW_ID_PREFIX}-{team}-{uuid.uuid4().hex[:12]}"


def _quote(value: str) -> str:
    """A visibility-query string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _summary(team: str, goal: str) -> str:
    text = " ".join(f"{team}: {goal}".split())
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + f"… ({len(text):,} characters in all)"


def _details(request: SagaRequest, entry: str | None, workflow_id: str) -> str:
    """Markdown shown in the UI's details: one paragraph per fact, metadata as a list.

    Long goals and metadata values are cut: the details are a second copy of them in the history.
    """
    blocks = [
        f"**Team:** {request.team_label}",
        f"**Goal:** {_clip(request.goal, DETAILS_GOAL_MAX)}",
        f"**Correlation id:** `{request.correlation_id}`",
        f"**Workflow id:** `{workflow_id}`",
    ]
    if entry:
        blocks.append(f"**Entry agent:** {entry}")
    if request.metadata:
        items = "\n".join(
            f"- {key}: {_clip(value, DETAILS_META_MAX)}" for key, value in sorted(request.metadata.items())
        )
        blocks.append(f"**Metadata:**\n{items}")
    return "\n\n".join(blocks)


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB" if size >= 1024 else f"{size} bytes"


def check_request_size(request: SagaRequest) -> None:
    """Refuse a start request Temporal could not carry, before it is sent.

    Raises:
        InvalidInput: the goal, the metadata or the whole request is over its limit (named in the message).
    """
    check_goal_and_metadata(request.goal, request.metadata)
    total = len(request.model_dump_json().encode())
    if total > MAX_REQUEST_BYTES:
        raise InvalidInput(f"the start request is {_kib(total)}, over the {_kib(MAX_REQUEST_BYTES)} limit")


def check_goal_and_metadata(goal: str, metadata: Mapping[str, str]) -> None:
    """Refuse a goal or metadata over its size limit (the limit is in the message).

    Raises:
        InvalidInput: one of them is too large.
    """
    size = len(goal.encode())
    if size > MAX_GOAL_BYTES:
        raise InvalidInput(
            f"the goal is {_kib(size)}, over the {_kib(MAX_GOAL_BYTES)} limit; "
            "put large documents where a tool can read them and give their location in the goal"
        )
    meta = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in metadata.items())
    if meta > MAX_METADATA_BYTES:
        raise InvalidInput(f"the metadata is {_kib(meta)}, over the {_kib(MAX_METADATA_BYTES)} limit")


def _check_size(what: str, payload: BaseModel) -> None:
    size = len(payload.model_dump_json())
    if size > MAX_DECISION_BYTES:
        raise InvalidInput(f"the {what} is {size} bytes, over the {MAX_DECISION_BYTES} byte limit")


def _is_not_found(exc: RPCError) -> bool:
    return exc.status == RPCStatusCode.NOT_FOUND


def _no_worker_answered(exc: RPCError) -> bool:
    """Whether a query or update failed because no worker took it: it timed out, or the
    server said at once that no worker polled the task queue lately (a run left behind by a
    worker that is gone)."""
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return True
    return exc.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in exc.message.lower()


def _reviewer_name(reviewer: str | None) -> str:
    try:
        return resolve_reviewer(reviewer).name
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _failure_message(exc: BaseException) -> str:
    """The innermost message of a failure chain, which is the one that explains it.

    Temporal failures carry the original error's message in `.message`; `str()` of them
    prefixes the error type (`ValueError: ...`), which means nothing to a reviewer.
    """
    cause: BaseException | None = exc
    message = str(exc)
    while cause is not None:
        text = getattr(cause, "message", None) or str(cause)
        if text:
            message = text
        cause = cause.__cause__
    return _first_line(message)


async def _stuck_reason(client: Client, desc: WorkflowExecutionDescription) -> str | None:
    """The worker's error when a live run's workflow task keeps failing, else None.

    Cheap for healthy runs: the history is read only when the pending task is a retry.
    """
    if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
        return None
    pending = desc.raw_description.pending_workflow_task
    if not desc.raw_description.HasField("pending_workflow_task") or pending.attempt < STUCK_ATTEMPTS:
        return None
    # Retries of a failing task are not written to history: the newest task outcome is the first failure.
    response = await client.workflow_service.get_workflow_execution_history_reverse(
        GetWorkflowExecutionHistoryReverseRequest(
            namespace=client.namespace,
            execution=WorkflowExecutionRef(workflow_id=desc.id, run_id=desc.run_id),
            maximum_page_size=50,
        )
    )
    for event in response.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            return _first_line(failure.message) or "the workflow task failed"
        if event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        ):
            return None
    return None


# --------------------------------------------------------------------------- handle


class RunHandle:
    """One agent saga run: read it, decide its reviews, cancel it, wait for it.

    The handle follows the workflow id, not one run id, so it keeps working across
    continue-as-new.

    Attributes:
        workflow_id: The run's workflow id.
        run_id: The run id known when the handle was made (the first run for a fresh start).
        ui_url: Link to the run in the Temporal Web UI.
        correlation_id: The correlation id, when this handle started the run.
    """

    def __init__(
        self, keel: Keel, workflow_id: str, run_id: str | None = None, *, correlation_id: str | None = None
    ) -> None:
        self._keel = keel
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.correlation_id = correlation_id
        self._handle: WorkflowHandle[Any, SagaResult] = keel.client.get_workflow_handle(
            workflow_id, result_type=SagaResult
        )

    def __repr__(self) -> str:
        return f"RunHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    @property
    def ui_url(self) -> str:
        """Link to the run in the Temporal Web UI."""
        return self._keel.ui_url(self.workflow_id)

    @property
    def handle(self) -> WorkflowHandle[Any, SagaResult]:
        """The underlying Temporal workflow handle, for anything this API does not cover."""
        return self._handle

    # ------------------------------------------------------------------ reading

    async def _describe(self) -> WorkflowExecutionDescription:
        try:
            desc = await self._handle.describe()
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            raise
        if self.run_id is None:
            self.run_id = desc.run_id
        return desc

    async def execution_status(self) -> WorkflowExecutionStatus:
        """Temporal's status of the latest run of this workflow id.

        Raises:
            RunNotFound: no such workflow id.
        """
        return (await self._describe()).status or WorkflowExecutionStatus.RUNNING

    async def stuck(self) -> str | None:
        """Why the run cannot make progress, if its workflow task keeps failing; else None.

        A failing workflow task is retried forever and the run looks merely slow: its status query
        is never answered. The worker's error is read from the last `WorkflowTaskFailed` event
        (for instance a worker without the `KEEL_ENCRYPTION_KEY` the client encrypted with).

        Raises:
            RunNotFound: no such workflow id.
        """
        return await _stuck_reason(self._keel.client, await self._describe())

    def _stuck_error(self, worker_error: str) -> RunStuck:
        return RunStuck(
            f"run {self.workflow_id} is stuck: its workflow task keeps failing on the worker: {worker_error}",
            worker_error,
        )

    async def _query(self, name: str, result_type: type, wait: timedelta) -> Any:
        try:
            return await self._handle.query(name, result_type=result_type, rpc_timeout=wait)
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            if exc.status == RPCStatusCode.FAILED_PRECONDITION and "failed state" in exc.message:
                raise RunStuck(
                    f"run {self.workflow_id} cannot answer: its workflow task is failing "
                    "(its history in the Temporal UI shows why)"
                ) from None
            if _no_worker_answered(exc):
                raise WorkerUnavailable(
                    f"no worker answered the {name!r} query of {self.workflow_id} within "
                    f"{wait.total_seconds():g}s (is `keel worker` running on task queue "
                    f"{self._keel.settings.task_queue!r}?)"
                ) from None
            raise
        except WorkflowQueryFailedError as exc:
            raise WorkerUnavailable(f"the {name!r} query of {self.workflow_id} failed: {exc}") from None

    async def status(self, *, worker_wait: timedelta | None = None) -> SagaStatusView:
        """The run's `status` query: status, active agent, pending review, spend, errors.

        For a finished run whose history no worker can replay (or that was terminated before
        its first workflow task), the view is rebuilt from the start request and the result. A run
        that Temporal ended (terminated, timed out) shows `Terminated`/`TimedOut`, with no review
        pending.

        Args:
            worker_wait: How long a live run's query waits for a worker; default the client's
                `query_timeout`.

        Raises:
            RunNotFound: no such workflow id.
            RunStuck: the run is live but its workflow task keeps failing (`worker_error` says why).
            WorkerUnavailable: the run is live but no worker answers.
        """
        desc = await self._describe()
        execution = desc.status or WorkflowExecutionStatus.RUNNING
        if execution == WorkflowExecutionStatus.RUNNING:
            # Checked first: a stuck run's query is never answered, and waiting for it says nothing.
            problem = await _stuck_reason(self._keel.client, desc)
            if problem is not None:
                raise self._stuck_error(problem)
            return await self._query("status", SagaStatusView, worker_wait or self._keel.query_timeout)
        try:
            view: SagaStatusView = await self._query("status", SagaStatusView, CLOSED_QUERY_TIMEOUT)
        except (WorkerUnavailable, RunStuck):
            return await self._closed_view(execution)
        except RPCError as exc:
            # A run terminated before its first workflow task has no state to query.
            if exc.status != RPCStatusCode.FAILED_PRECONDITION:
                raise
            return await self._closed_view(execution)
        if not view.status.is_final:
            # Terminated or timed out while running: the workflow never saw its end, and
            # nothing it waited for (a review) is pending any more.
            status = _ended_status(execution)
            view = view.model_copy(
                update={
                    "status": status,
                    "pending_review": None,
                    "waiting_for": None,
                    "last_error": view.last_error or f"run {status.value.lower()} by Temporal",
                }
            )
        return view

    async def _closed_view(self, execution: WorkflowExecutionStatus) -> SagaStatusView:
        request = await self.request()
        result: SagaResult | None = None
        reason: str | None = None
        try:
            result = await self.result()
        except KeelError as exc:
            reason = str(exc)
        if result is None:
            status = _ended_status(execution)
            if reason is None or execution in (
                WorkflowExecutionStatus.TERMINATED,
                WorkflowExecutionStatus.TIMED_OUT,
            ):
                reason = f"run {status.value.lower()} by Temporal" + (
                    f": {reason.split(': ', 1)[-1]}" if reason else ""
                )
            return SagaStatusView(
                status=status,
                team=request.team_label,
                goal=request.goal,
                active_agent="",
                step=0,
                turns=0,
                handoffs=0,
                correlation_id=request.correlation_id or "",
                last_error=reason,
            )
        return SagaStatusView(
            status=result.status,
            team=result.team or request.team_label,
            goal=request.goal,
            active_agent=result.final_agent or "",
            step=len(result.steps),
            turns=sum(1 for s in result.steps if s.kind == "llm"),
            handoffs=sum(1 for s in result.steps if s.kind == "handoff"),
            tokens=result.tokens,
            cost_usd=result.cost_usd,
            correlation_id=result.correlation_id,
            compensations=result.compensations,
            last_error=result.reason,
        )

    async def transcript(self) -> list[TranscriptEntry]:
        """The run's `transcript` query: messages, tool calls, handoffs, decisions, in order.

        Raises:
            RunNotFound: no such workflow id.
            WorkerUnavailable: no worker answers.
        """
        execution = await self.execution_status()
        timeout = self._keel.query_timeout
        if execution != WorkflowExecutionStatus.RUNNING:
            timeout = max(timeout, CLOSED_QUERY_TIMEOUT)
        entries: list[TranscriptEntry] = await self._query("transcript", list[TranscriptEntry], timeout)
        return entries

    async def result(self, *, wait: float | None = None) -> SagaResult:  # noqa: ASYNC109
        """Wait for the run to end and return its `SagaResult`.

        Failed, rejected and compensated runs return a result too (see `SagaResult.status`);
        only a run that did not return one raises.

        Args:
            wait: Seconds to wait at most; None waits as long as it takes.

        Raises:
            RunNotFound: no such workflow id.
            KeelError: the run was cancelled, terminated, timed out or crashed (with the reason).
            TimeoutError: `wait` seconds passed first.
        """
        try:
            if wait is None:
                return await self._handle.result()
            return await asyncio.wait_for(self._handle.result(), wait)
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            raise
        except WorkflowFailureError as exc:
            result = saga_result_of(exc)
            if result is not None:
                return result
            raise KeelError(
                f"run {self.workflow_id} ended without a result: {_failure_message(exc)}"
            ) from None

    async def request(self) -> SagaRequest:
        """The `SagaRequest` the latest run of this workflow id started with (from its history).

        Raises:
            RunNotFound: no such workflow id.
        """
        try:
            async for event in self._handle.fetch_history_events(page_size=1):
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                    attrs = event.workflow_execution_started_event_attributes
                    [request] = await self._keel.client.data_converter.decode(
                        attrs.input.payloads, [SagaRequest]
                    )
                    return request
                break
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            raise
        raise KeelError(f"run {self.workflow_id} has no start event in its history")

    async def watch(self, *, interval: float = WATCH_INTERVAL) -> AsyncIterator[SagaStatusView]:
        """Status snapshots as they change, ending after the one that shows the run ended.

        Args:
            interval: Seconds between two polls.

        Raises:
            RunNotFound: no such workflow id.
            WorkerUnavailable: no worker answers the status query.
        """
        last: SagaStatusView | None = None
        while True:
            view = await self.status()
            if view != last:
                yield view
                last = view
            if view.status.is_final:
                return
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ reviews

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
        self, request_id: str, decision: str, reviewer: str, arguments: dict[str, Any] | None
    ) -> str | None:
        return signature_for(
            self._keel.signing_key(),
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
            from agentkeel.teams import format_validation_error

            raise InvalidInput(f"invalid decision: {format_validation_error(exc)}") from None
        _check_size("review decision", review)
        # The signature covers the request id, so it must be known before signing.
        request_id = request_id or await self._pending_request_id()
        review = review.model_copy(
            update={
                "request_id": request_id,
                "signature": self._signature(request_id, decision, name, arguments),
            }
        )
        try:
            outcome: ReviewOutcome = await self._handle.execute_update(
                "review", review, result_type=ReviewOutcome, rpc_timeout=self._keel.query_timeout
            )
        except WorkflowUpdateFailedError as exc:
            raise ReviewRejected(_failure_message(exc)) from None
        except RPCError as exc:
            if _is_not_found(exc):
                if "completed" in exc.message.lower():
                    raise ReviewRejected("the run has ended; nothing to review") from None
                raise RunNotFound(self.workflow_id) from None
            if _no_worker_answered(exc):
                raise WorkerUnavailable(
                    f"no worker accepted the review of {self.workflow_id} within "
                    f"{self._keel.query_timeout.total_seconds():g}s"
                ) from None
            raise
        if outcome.refused:
            raise DecisionRefused(outcome.message)
        return outcome

    async def approve(
        self, *, reviewer: str | None = None, comment: str | None = None, request_id: str | None = None
    ) -> ReviewOutcome:
        """Approve the pending review through the `review` update and return what the run did.

        Args:
            reviewer: Who decides; None takes `KEEL_REVIEWER`, then the OS user (never "anonymous").
            comment: Why.
            request_id: The review to approve; None reads the pending one from the status query.

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
            request_id: The review to reject; None reads the pending one.

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
        _check_size(f"{name} signal", payload)
        try:
            await self._handle.signal(name, payload)
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            raise

    async def _signed_signal(
        self, name: str, reviewer: str | None, request_id: str | None, **fields: str | None
    ) -> None:
        who = _reviewer_name(reviewer)
        signature = None
        if self._keel.signing_key() is not None:
            request_id = request_id or await self._pending_request_id()
            signature = self._signature(request_id, name, who, None)
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

    async def cancel(self, *, reason: str = "") -> None:
        """Ask the run to cancel: it compensates what it did and ends `Cancelled`.

        Raises:
            RunNotFound: no such workflow id.
            RunEnded: the run has already ended.
            RunStuck: the request is recorded, but the run's workflow task keeps failing, so nothing
                compensates until a worker can run it.
        """
        execution = await self.execution_status()
        if execution != WorkflowExecutionStatus.RUNNING:
            raise RunEnded(f"run {self.workflow_id} has already ended ({_execution_status_name(execution)})")
        try:
            await self._handle.cancel(reason=reason)
        except RPCError as exc:
            if _is_not_found(exc):
                raise RunNotFound(self.workflow_id) from None
            raise
        problem = await self.stuck()
        if problem is not None:
            # The request is recorded, but only a worker that can run the workflow compensates.
            raise RunStuck(
                f"cancellation of {self.workflow_id} is recorded, but its workflow task keeps failing "
                f"({problem}): compensation cannot run until a worker can read it",
                problem,
            )


# --------------------------------------------------------------------------- client


class Keel:
    """Entry point of the starter API: start runs, get handles, list runs, read the team registry.

    Use as an async context manager (connects on entry) or connect explicitly::

        async with Keel() as keel: ...
        keel = await Keel.connect()

    Args:
        client: A connected Temporal client (with the pydantic data converter); None connects on entry.
        settings: Platform settings; None reads `KEEL_*` and `keel.toml`.
        address: Temporal address overriding env config, used when connecting.
        namespace: Temporal namespace overriding env config, used when connecting.
        query_timeout: How long queries and updates wait for a worker.
        reviewer_key: Private key file that signs review decisions; None uses `KEEL_REVIEWER_KEY`.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        settings: Settings | None = None,
        address: str | None = None,
        namespace: str | None = None,
        query_timeout: timedelta = QUERY_TIMEOUT,
        reviewer_key: str | Path | None = None,
    ) -> None:
        self._client = client
        self.settings = settings or load_settings()
        self._address = address
        self._namespace = namespace
        self.query_timeout = query_timeout
        self._reviewer_key_path = reviewer_key

    def signing_key(self) -> Ed25519PrivateKey | None:
        """The key that signs this client's review decisions, or None.

        Raises:
            InvalidInput: the key file is missing or is not an Ed25519 private key.
        """
        try:
            return reviewer_key(self._reviewer_key_path)
        except SigningError as exc:
            raise InvalidInput(str(exc)) from None

    @classmethod
    async def connect(
        cls,
        *,
        settings: Settings | None = None,
        address: str | None = None,
        namespace: str | None = None,
        query_timeout: timedelta = QUERY_TIMEOUT,
    ) -> Keel:
        """Connect to Temporal the platform's way and return a ready `Keel`.

        Raises:
            agentkeel.temporal.TemporalUnavailable: the server does not answer (a `ConnectionError`).
            agentkeel.settings.ConfigError: `keel.toml` or a `KEEL_*` variable is invalid.
        """
        keel = cls(settings=settings, address=address, namespace=namespace, query_timeout=query_timeout)
        await keel._ensure_client()
        return keel

    async def _ensure_client(self) -> Client:
        if self._client is None:
            from agentkeel.temporal import connect

            self._client = await connect(address=self._address, namespace=self._namespace)
        return self._client

    async def __aenter__(self) -> Keel:
        await self._ensure_client()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Temporal clients hold no per-use resources to release; the runtime outlives them.
        return None

    @property
    def client(self) -> Client:
        """The Temporal client (connect first)."""
        if self._client is None:
            raise RuntimeError("Keel is not connected: use `async with Keel()` or `await Keel.connect()`")
        return self._client

    def ui_url(self, workflow_id: str | None = None) -> str:
        """Link to a run (or the workflow list) in the Temporal Web UI."""
        from agentkeel.temporal import ui_url

        namespace = self._client.namespace if self._client is not None else self._namespace
        return ui_url(workflow_id, namespace=namespace, base=self.settings.ui_url)

    # ------------------------------------------------------------------ teams

    def teams(self) -> dict[str, TeamSpec]:
        """The registered teams by name: the built-in ones and those in `Settings.teams_dir`.

        Raises:
            InvalidInput: a team file in the registry is invalid.
        """
        try:
            return load_registry(self.settings.teams_dir, self.settings.apps)
        except TeamFileError as exc:
            raise InvalidInput(str(exc)) from None

    def resolve_team(self, team: str | TeamSpec | Path) -> tuple[str | None, TeamSpec]:
        """Check a team before starting: a registered name, a `TeamSpec`, or a team file.

        Returns:
            `(team_name, spec)`: `team_name` is set for a registered team (the worker resolves it,
            so the spec it used lands in the run's history), None for a spec or a file.

        Raises:
            TeamNotFound: a name that is neither registered nor an existing file.
            InvalidInput: the team file or spec is invalid.
        """
        if isinstance(team, TeamSpec):
            return None, team
        if isinstance(team, Path):
            return None, _load_file(team)
        registry = self.teams()
        if team in registry:
            return team, registry[team]
        path = Path(team)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            return None, _load_file(path)
        raise TeamNotFound(team, list(registry))

    # ------------------------------------------------------------------ starting

    async def start(
        self,
        team: str | TeamSpec | Path,
        goal: str,
        *,
        workflow_id: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start an agent saga.

        Everything is validated before the start: workflow input that fails validation in the
        worker would make the run's first task retry forever.

        Args:
            team: A registered team name, a `TeamSpec`, or the path of a YAML/JSON team file.
            goal: What the team should achieve.
            workflow_id: Default `keel-<team>-<12 hex chars>`.
            correlation_id: Default a fresh uuid4 hex; carried to every activity, log line and HTTP call.
            metadata: String key/values stored with the request (shown in the UI's details).
            reuse_id: Allow `workflow_id` to be the id of a closed run (the new run gets its own
                idempotency keys, so it never shares side effects with the old one).

        Returns:
            A handle on the started run.

        Raises:
            TeamNotFound: unknown team name.
            InvalidInput: bad team file, empty goal, non-string metadata, a goal or metadata over
                its size limit, a model alias the settings do not define, server-side validation.
            RunAlreadyExists: `workflow_id` is running, or has run and `reuse_id` is False.
        """
        team_name, spec = self.resolve_team(team)
        try:
            request = SagaRequest(
                goal=goal,
                team=None if team_name else spec,
                team_name=team_name,
                correlation_id=correlation_id or uuid.uuid4().hex,
                metadata=dict(metadata or {}),
            )
        except ValidationError as exc:
            from agentkeel.teams import format_validation_error

            raise InvalidInput(f"invalid request: {format_validation_error(exc)}") from None
        self.check_models(spec)
        return await self.start_request(request, workflow_id=workflow_id, entry=spec.entry, reuse_id=reuse_id)

    def check_models(self, spec: TeamSpec) -> None:
        """Refuse a team whose agents name a model alias the loaded settings do not define.

        Checked at start, so a typo fails at once rather than at the run's first LLM call.
        The worker reads the same `keel.toml`; a worker configured differently is not seen here.

        Raises:
            InvalidInput: an unknown alias (with the configured ones), or an invalid `keel.toml`.
        """
        from agentkeel.activities.llm_config import LLMConfig

        try:
            config = LLMConfig.load(self.settings)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        unknown = sorted({a.model for a in spec.agents if a.model not in config.models})
        if unknown:
            agents = ", ".join(f"{a.name} ({a.model})" for a in spec.agents if a.model in unknown)
            raise InvalidInput(
                f"team {spec.name!r}: unknown model alias {', '.join(map(repr, unknown))} used by {agents}; "
                f"configured aliases: {', '.join(sorted(config.models))}"
            )

    async def start_request(
        self,
        request: SagaRequest,
        *,
        workflow_id: str | None = None,
        entry: str | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start a run from a prepared `SagaRequest` (used by `start` and `redrive`).

        Args:
            request: The run's input.
            workflow_id: Default `keel-<team>-<12 hex chars>`.
            entry: The team's entry agent, shown from the start.
            reuse_id: Allow the id of a run that has ended (see `start`).

        Raises:
            InvalidInput: the request is over a size limit, or the server refused the start
                (for instance unknown search attributes).
            RunAlreadyExists: `workflow_id` is running, or has run and `reuse_id` is False.
        """
        if request.checkpoint is not None:
            raise InvalidInput("a request with a checkpoint is the workflow's own continue-as-new input")
        check_request_size(request)
        if request.correlation_id is None:
            request = request.model_copy(update={"correlation_id": uuid.uuid4().hex})
        team = request.team_label
        workflow_id = workflow_id or new_workflow_id(team)
        # Every attribute the run would set in its first task, set here instead: the run writes
        # only what differs, so a fresh run starts without an upsert of its own, and the
        # filters of the UI (`KeelCostUsd > 0.1`, `KeelAgent = "..."`) see it from its start.
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.KEEL_STATUS, SagaStatus.RUNNING.value),
            SearchAttributePair(sa.KEEL_TEAM, team),
            SearchAttributePair(sa.KEEL_CORRELATION_ID, str(request.correlation_id)),
            SearchAttributePair(sa.KEEL_TOKENS, 0),
            SearchAttributePair(sa.KEEL_COST_USD, 0.0),
        ]
        if entry:
            pairs.append(SearchAttributePair(sa.KEEL_AGENT, entry))
        attributes = TypedSearchAttributes(pairs)
        try:
            handle = await self.client.start_workflow(
                AGENT_SAGA_WORKFLOW,
                request,
                id=workflow_id,
                task_queue=self.settings.task_queue,
                search_attributes=attributes,
                static_summary=_summary(team, request.goal),
                static_details=_details(request, entry, workflow_id),
                id_reuse_policy=(
                    WorkflowIDReusePolicy.ALLOW_DUPLICATE
                    if reuse_id
                    else WorkflowIDReusePolicy.REJECT_DUPLICATE
                ),
            )
        except WorkflowAlreadyStartedError:
            raise await self._already_exists(workflow_id) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                message = _first_line(exc.message)
                if "search attribute" in message.lower():
                    message += " (start the server with `keel server`, which registers the Keel* attributes)"
                raise InvalidInput(f"the server refused the start: {message}") from None
            raise
        return RunHandle(
            self,
            workflow_id,
            handle.first_execution_run_id or handle.result_run_id,
            correlation_id=request.correlation_id,
        )

    async def _already_exists(self, workflow_id: str) -> RunAlreadyExists:
        try:
            execution = await RunHandle(self, workflow_id).execution_status()
        except (RunNotFound, RPCError):
            execution = WorkflowExecutionStatus.RUNNING
        if execution == WorkflowExecutionStatus.RUNNING:
            return RunAlreadyExists(f"a run with id {workflow_id} is already running")
        return RunAlreadyExists(
            f"a run with id {workflow_id} already ran ({_execution_status_name(execution)}); "
            "pass --reuse-id (reuse_id=True) to start a new run with this id and fresh idempotency keys"
        )

    async def get(self, workflow_id: str) -> RunHandle:
        """A handle on an existing run.

        Raises:
            RunNotFound: no such workflow id.
        """
        handle = RunHandle(self, workflow_id)
        await handle.execution_status()
        return handle

    async def redrive(
        self,
        workflow_id: str,
        *,
        new_workflow_id: str | None = None,
        correlation_id: str | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start a new run with the same request as a finished one (the dead-letter redrive).

        The new run keeps the correlation id (both runs belong to one business transaction)
        and records the old one in `metadata["redrive_of"]`. Redriving under the old run's own id
        (`new_workflow_id=workflow_id`) needs `reuse_id=True`.

        Args:
            workflow_id: The finished run.
            new_workflow_id: Id of the new run (default a fresh one).
            correlation_id: Default the old run's.
            reuse_id: Allow `new_workflow_id` to be the id of a run that has ended (the old run's own
                id included); the new run gets side effects of its own.

        Raises:
            RunNotFound: no such workflow id.
            RunStillRunning: the run is still going (cancel it first).
            RunAlreadyExists: `new_workflow_id` is taken (see `reuse_id`).
        """
        old = await self.get(workflow_id)
        execution = await old.execution_status()
        if execution == WorkflowExecutionStatus.RUNNING:
            raise RunStillRunning(f"run {workflow_id} is still running; cancel it before redriving")
        request = await old.request()
        team: TeamSpec | None = request.team
        if request.checkpoint is not None and request.team_name is None:
            team = request.checkpoint.team
        redriven = SagaRequest(
            goal=request.goal,
            team=team,
            team_name=request.team_name,
            correlation_id=correlation_id
            or request.correlation_id
            or (request.checkpoint.correlation_id if request.checkpoint else None),
            metadata={**request.metadata, "redrive_of": workflow_id},
        )
        if redriven.team_name is not None and redriven.team_name not in self.teams():
            raise TeamNotFound(redriven.team_name, list(self.teams()))
        entry = team.entry if team else self.teams()[str(redriven.team_name)].entry
        return await self.start_request(redriven, workflow_id=new_workflow_id, entry=entry, reuse_id=reuse_id)

    # ------------------------------------------------------------------ listing

    async def list_runs(
        self,
        *,
        status: SagaStatus | str | None = None,
        team: str | None = None,
        correlation_id: str | None = None,
        limit: int = 50,
        query: str | None = None,
    ) -> list[RunSummary]:
        """Runs of `AgentSagaWorkflow`, newest first, found through the Keel* search attributes.

        Args:
            status: Only runs whose `KeelStatus` is this.
            team: Only runs of this team.
            correlation_id: Only runs with this correlation id.
            limit: At most this many runs.
            query: Extra visibility-query clause, ANDed with the rest.

        Raises:
            InvalidInput: an unknown status, a limit below 1, or a query the server refuses.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        clauses = [f"WorkflowType = {_quote(AGENT_SAGA_WORKFLOW)}"]
        if status is not None:
            wanted = status if isinstance(status, SagaStatus) else parse_status(status)
            if wanted in _TEMPORAL_ONLY:
                # Never upserted by a run: only Temporal's own status knows it.
                clauses.append(f"ExecutionStatus = {_quote(_TEMPORAL_ONLY[wanted])}")
            else:
                clauses.append(f"{sa.KEEL_STATUS.name} = {_quote(wanted.value)}")
        if team:
            clauses.append(f"{sa.KEEL_TEAM.name} = {_quote(team)}")
        if correlation_id:
            clauses.append(f"{sa.KEEL_CORRELATION_ID.name} = {_quote(correlation_id)}")
        if query:
            clauses.append(f"({query})")
        runs = await self._list(" AND ".join(clauses), limit)
        return await self._mark_stuck(runs)

    async def _list(self, query: str, limit: int) -> list[RunSummary]:
        """Runs matching `query`, newest start first.

        SQL visibility (the dev server's) refuses `ORDER BY` and lists open runs first, then closed
        ones by close time. Open and closed runs are read separately, `limit` of each, and merged by
        start time.
        """
        runs: list[RunSummary] = []
        try:
            for part in ("ExecutionStatus = 'Running'", "ExecutionStatus != 'Running'"):
                async for execution in self.client.list_workflows(
                    f"({query}) AND {part}", limit=limit, page_size=min(limit, 1000)
                ):
                    runs.append(self._summarize(execution))
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"the server refused the query: {_first_line(exc.message)}") from None
            raise
        oldest = datetime.min.replace(tzinfo=UTC)
        runs.sort(key=lambda r: (r.started_at or oldest, r.workflow_id), reverse=True)
        return runs[:limit]

    async def _mark_stuck(self, runs: list[RunSummary]) -> list[RunSummary]:
        """Add the worker's error to the live runs whose workflow task keeps failing."""
        gate = asyncio.Semaphore(16)

        async def check(run: RunSummary) -> RunSummary:
            if run.execution_status != "Running":
                return run
            async with gate:
                try:
                    handle = RunHandle(self, run.workflow_id)
                    problem = await handle.stuck()
                except (KeelError, RPCError):
                    return run  # gone since the listing, or not readable: shown as listed
            return run.model_copy(update={"stuck": problem}) if problem else run

        return list(await asyncio.gather(*(check(run) for run in runs)))

    def _summarize(self, execution: WorkflowExecution) -> RunSummary:
        attrs = execution.typed_search_attributes
        keel_status = attrs.get(sa.KEEL_STATUS)
        return RunSummary(
            workflow_id=execution.id,
            run_id=execution.run_id,
            status=_run_status(keel_status, execution.status),
            execution_status=_execution_status_name(execution.status),
            team=attrs.get(sa.KEEL_TEAM),
            agent=attrs.get(sa.KEEL_AGENT),
            correlation_id=attrs.get(sa.KEEL_CORRELATION_ID),
            tokens=attrs.get(sa.KEEL_TOKENS),
            cost_usd=attrs.get(sa.KEEL_COST_USD),
            started_at=execution.start_time,
            closed_at=execution.close_time,
            ui_url=self.ui_url(execution.id),
        )

    async def pending(self, *, team: str | None = None, limit: int = 50) -> list[RunSummary]:
        """Live runs waiting for a person: those waiting for a review, each with the review it waits
        for (from the status query), and those stuck (their workflow task keeps failing, with the
        worker's error in `stuck`), which need someone to fix the worker.

        A run whose worker does not answer is still listed, with `waiting_for` saying so.
        """
        live = "ExecutionStatus = 'Running'"
        awaiting = await self.list_runs(status=SagaStatus.AWAITING_REVIEW, team=team, limit=limit, query=live)
        # A run stuck before its first task completed still has the `Running` set at its start.
        running = await self.list_runs(status=SagaStatus.RUNNING, team=team, limit=limit, query=live)
        stuck = [run for run in [*awaiting, *running] if run.stuck]
        runs = [run for run in awaiting if not run.stuck]

        async def fill(run: RunSummary) -> RunSummary:
            try:
                view = await RunHandle(self, run.workflow_id, run.run_id).status(
                    worker_wait=min(self.query_timeout, LISTING_QUERY_TIMEOUT)
                )
            except (WorkerUnavailable, RunNotFound, RunStuck) as exc:
                return run.model_copy(update={"waiting_for": f"unknown: {exc}"})
            return run.model_copy(
                update={
                    "status": view.status.value,
                    "pending_review": view.pending_review,
                    "waiting_for": view.waiting_for,
                }
            )

        filled = await asyncio.gather(*(fill(run) for run in runs))
        # A review decided since the visibility record was written is no longer pending.
        waiting = [run for run in filled if run.status == SagaStatus.AWAITING_REVIEW.value]
        oldest = datetime.min.replace(tzinfo=UTC)
        both = sorted([*stuck, *waiting], key=lambda r: r.started_at or oldest, reverse=True)
        return both[:limit]

    async def failed(self, *, team: str | None = None, limit: int = 50) -> list[RunSummary]:
        """The dead-letter view: runs that ended Failed or Compensated, or that Temporal ended abnormally.

        Each comes with the reason and the steps left uncompensated, read from the run's result
        (or its failure, for runs that ended without one).
        """
        keel = sa.KEEL_STATUS.name
        finals = ", ".join(_quote(s.value) for s in (SagaStatus.FAILED, SagaStatus.COMPENSATED))
        clause = (
            f"ExecutionStatus != 'Running' AND ({keel} IN ({finals}) "
            "OR ExecutionStatus IN ('Failed', 'Terminated', 'TimedOut'))"
        )
        runs = await self.list_runs(team=team, limit=limit, query=clause)

        async def fill(run: RunSummary) -> RunSummary:
            try:
                result = await RunHandle(self, run.workflow_id, run.run_id).result(wait=10)
            except (KeelError, TimeoutError) as exc:
                return run.model_copy(update={"reason": str(exc)})
            return run.model_copy(
                update={
                    "status": result.status.value,
                    "reason": result.reason,
                    "uncompensated": list(result.uncompensated),
                }
            )

        return list(await asyncio.gather(*(fill(run) for run in runs)))


def _load_file(path: Path) -> TeamSpec:
    try:
        return load_team_file(path)
    except TeamFileError as exc:
        raise InvalidInput(str(exc)) from None
