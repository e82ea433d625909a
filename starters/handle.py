"""`RunHandle`: one run, read, watched, decided and cancelled through typed references to the workflow.

Every query, update and signal names its handler through `AgentSagaWorkflow`
(`AgentSagaWorkflow.status`, `.transcript`, `.review`...), so the wire names are
written once, in the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionRef
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from agentkeel.contracts import ChatMessage, SagaRequest, SagaResult, SagaStatusView, TranscriptEntry
from agentkeel.outcomes import saga_result_of
from agentkeel.starters.decisions import RunDecisions
from agentkeel.starters.errors import (
    KeelError,
    Rpc,
    RunEnded,
    RunStuck,
    WorkerUnavailable,
    failure_message,
    first_line,
    rpc_errors,
)
from agentkeel.starters.statuses import ended_status, execution_status_name
from agentkeel.workflows.agent_saga import AgentSagaWorkflow

if TYPE_CHECKING:
    from agentkeel.starters.client import Keel

CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)
"""Queries on a finished run replay its history on a worker; without one, fall back to the result sooner."""
WATCH_INTERVAL = 0.5
"""Seconds between two status polls of `RunHandle.watch`."""
STUCK_ATTEMPTS = 2
"""A run whose pending workflow task is on this attempt or later has failed a task already;
with a `WorkflowTaskFailed` as its last task outcome it is stuck until a worker can run it."""


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
            return first_line(failure.message) or "the workflow task failed"
        if event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        ):
            return None
    return None


@contextlib.contextmanager
def _workers_store(store_url: str) -> Iterator[None]:
    """Say which store was read when content is missing: usually not the one the workers write."""
    from agentkeel.store import MissingContentError

    try:
        yield
    except MissingContentError as exc:
        raise MissingContentError(
            f"{exc}: read from {store_url}; is it the store the workers write (KEEL_STORE_URL or "
            "[store] url in keel.toml, the same on both), and was the run's content kept (keel store gc)?"
        ) from None


def _stored_ref(entry: TranscriptEntry) -> str | None:
    """The reference of a tool result the worker stored, when `entry` is one."""
    ref = entry.data.get("ref") if entry.kind == "tool_result" else None
    return ref if isinstance(ref, str) and "bytes" in entry.data else None


class RunHandle(RunDecisions):
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
        with rpc_errors(Rpc(self.workflow_id)):
            desc = await self._handle.describe()
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

    def _query_rpc(self, name: str, wait: timedelta) -> Rpc:
        return Rpc(
            self.workflow_id,
            what=f"the {name!r} query of {self.workflow_id}",
            no_worker=f"no worker answered the {name!r} query of {self.workflow_id} within "
            f"{wait.total_seconds():g}s (is `keel worker` running on task queue "
            f"{self._keel.settings.task_queue!r}?)",
        )

    async def _status_query(self, wait: timedelta) -> SagaStatusView:
        with rpc_errors(self._query_rpc("status", wait)):
            return await self._handle.query(AgentSagaWorkflow.status, rpc_timeout=wait)

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
            return await self._status_query(worker_wait or self._keel.query_timeout)
        try:
            view = await self._status_query(CLOSED_QUERY_TIMEOUT)
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
            status = ended_status(execution)
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
            status = ended_status(execution)
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

    async def transcript(self, *, resolve: bool = True) -> list[TranscriptEntry]:
        """The run's `transcript` query: messages, tool calls, handoffs, decisions, in order.

        Args:
            resolve: Replace each stored tool result (`data` = `{"ref", "bytes"}`) by the whole
                result, read from the conversation store.

        Raises:
            RunNotFound: no such workflow id.
            WorkerUnavailable: no worker answers.
        """
        entries: list[TranscriptEntry] = await self._query_closed_too(
            "transcript", AgentSagaWorkflow.transcript
        )
        if not resolve or not any(_stored_ref(e) for e in entries):
            return entries
        store = self._keel.store()
        refs = [ref for e in entries if (ref := _stored_ref(e))]
        with _workers_store(self._keel.store_url()):
            texts = dict(zip(refs, await store.get_many(refs), strict=True))
        return [
            e.model_copy(update={"data": json.loads(texts[ref])}) if (ref := _stored_ref(e)) else e
            for e in entries
        ]

    async def _query_closed_too(self, name: str, query: Any) -> Any:
        execution = await self.execution_status()
        timeout = self._keel.query_timeout
        if execution != WorkflowExecutionStatus.RUNNING:
            timeout = max(timeout, CLOSED_QUERY_TIMEOUT)
        with rpc_errors(self._query_rpc(name, timeout)):
            return await self._handle.query(query, rpc_timeout=timeout)

    async def conversation(self) -> list[ChatMessage]:
        """The run's whole conversation, every message as the model was given it, oldest first.

        Read from the conversation store (the run holds only its head reference); a run from
        before the store returns an empty list (its conversation is in its history). The agents'
        system prompts are not messages of the conversation.

        Raises:
            RunNotFound: no such workflow id.
            WorkerUnavailable: no worker answers.
            agentkeel.store.StoreError: the store cannot be read (or its content was reclaimed).
        """
        from agentkeel.activities.conversation import ConversationLayer

        state = await self._query_closed_too("conversation", AgentSagaWorkflow.conversation)
        if state is None:
            return []
        layer = ConversationLayer(self._keel.store())
        with _workers_store(self._keel.store_url()):
            return [*(await layer.read(state.head)), *(await layer.resolve(state.pending))]

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
            with rpc_errors(Rpc(self.workflow_id)):
                if wait is None:
                    return await self._handle.result()
                return await asyncio.wait_for(self._handle.result(), wait)
        except WorkflowFailureError as exc:
            result = saga_result_of(exc)
            if result is not None:
                return result
            raise KeelError(
                f"run {self.workflow_id} ended without a result: {failure_message(exc)}"
            ) from None

    async def request(self) -> SagaRequest:
        """The `SagaRequest` the latest run of this workflow id started with (from its history).

        Raises:
            RunNotFound: no such workflow id.
        """
        with rpc_errors(Rpc(self.workflow_id)):
            async for event in self._handle.fetch_history_events(page_size=1):
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                    attrs = event.workflow_execution_started_event_attributes
                    [request] = await self._keel.client.data_converter.decode(
                        attrs.input.payloads, [SagaRequest]
                    )
                    return request
                break
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
            raise RunEnded(f"run {self.workflow_id} has already ended ({execution_status_name(execution)})")
        with rpc_errors(Rpc(self.workflow_id)):
            await self._handle.cancel(reason=reason)
        problem = await self.stuck()
        if problem is not None:
            # The request is recorded, but only a worker that can run the workflow compensates.
            raise RunStuck(
                f"cancellation of {self.workflow_id} is recorded, but its workflow task keeps failing "
                f"({problem}): compensation cannot run until a worker can read it",
                problem,
            )
