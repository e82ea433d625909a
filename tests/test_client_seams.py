"""The seams of the starter client: RPC-error translation written once, one validation-error
formatter, and an approval that is one RPC through the workflow's typed `review` update.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator
from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.client import WorkflowExecutionDescription as Description
from temporalio.service import RPCError, RPCStatusCode

from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters.client import (
    InvalidInput,
    Keel,
    ReviewRejected,
    RunNotFound,
    RunStuck,
    WorkerUnavailable,
)
from agentkeel.starters.errors import Rpc, rpc_errors
from agentkeel.validation import format_validation_error
from agentkeel.workers.worker import running_worker
from tests.test_starter_api import GOAL, make_keel_settings, wait_for_review


@pytest.fixture
def keel_settings(worker_settings: Settings, offline_llm: Any, task_queue: str, dev_server: Any) -> Settings:
    """A task queue and ledger of the test's own (see `make_keel_settings`)."""
    return make_keel_settings(worker_settings, offline_llm, task_queue, dev_server)


# --------------------------------------------------------------------------- rpc_errors


def _rpc_error(status: RPCStatusCode, message: str) -> RPCError:
    return RPCError(message, status, b"")


def _raised(rpc: Rpc, exc: BaseException) -> BaseException:
    try:
        with rpc_errors(rpc):
            raise exc
    except BaseException as raised:  # noqa: BLE001 - the test looks at whatever came out
        return raised
    raise AssertionError("nothing raised")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rpc", "error", "expected", "text"),
    [
        (Rpc("w-1"), _rpc_error(RPCStatusCode.NOT_FOUND, "workflow not found"), RunNotFound, "'w-1'"),
        (
            Rpc("w-1", decision=True),
            _rpc_error(RPCStatusCode.NOT_FOUND, "workflow execution already completed"),
            ReviewRejected,
            "the run has ended; nothing to review",
        ),
        (
            Rpc("w-1", decision=True),
            _rpc_error(RPCStatusCode.NOT_FOUND, "workflow not found"),
            RunNotFound,
            "'w-1'",
        ),
        (
            Rpc("w-1", no_worker="no worker answered"),
            _rpc_error(RPCStatusCode.DEADLINE_EXCEEDED, "deadline"),
            WorkerUnavailable,
            "no worker answered",
        ),
        (
            Rpc("w-1", no_worker="no worker answered"),
            _rpc_error(RPCStatusCode.FAILED_PRECONDITION, "No poller seen for task queue recently"),
            WorkerUnavailable,
            "no worker answered",
        ),
        (
            Rpc("w-1"),
            _rpc_error(RPCStatusCode.FAILED_PRECONDITION, "workflow is in failed state"),
            RunStuck,
            "cannot answer",
        ),
        (
            Rpc(refused="start"),
            _rpc_error(RPCStatusCode.INVALID_ARGUMENT, "search attribute KeelX is not defined\nmore"),
            InvalidInput,
            "the server refused the start: search attribute KeelX is not defined (start the server with",
        ),
        (
            Rpc(refused="query"),
            _rpc_error(RPCStatusCode.INVALID_ARGUMENT, "bad query"),
            InvalidInput,
            "the server refused the query: bad query",
        ),
        (
            Rpc("w-1", no_worker="no worker accepted the review"),
            WorkflowUpdateRPCTimeoutOrCancelledError(),
            WorkerUnavailable,
            "no worker accepted the review",
        ),
    ],
)
def test_rpc_errors_become_keel_errors(rpc: Rpc, error: BaseException, expected: type, text: str) -> None:
    raised = _raised(rpc, error)
    assert type(raised) is expected
    assert text in str(raised)
    assert raised.__suppress_context__  # one line for people, not Temporal's traceback


@pytest.mark.unit
@pytest.mark.parametrize(
    "error",
    [
        _rpc_error(RPCStatusCode.UNAVAILABLE, "connection refused"),
        # Without a workflow id a NOT_FOUND (a namespace, say) is not a missing run.
        _rpc_error(RPCStatusCode.NOT_FOUND, "namespace not found"),
        # No worker takes part in a describe: a timeout there is not a missing worker.
        _rpc_error(RPCStatusCode.DEADLINE_EXCEEDED, "deadline"),
    ],
)
def test_other_rpc_errors_pass_through(error: RPCError) -> None:
    assert _raised(Rpc(refused="start"), error) is error


# --------------------------------------------------------------------------- validation errors


class _Doc(BaseModel):
    name: str = Field(min_length=1)
    size: int = 0

    @field_validator("size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 0:
            raise ValueError("size must not be negative")
        return value


@pytest.mark.unit
def test_one_formatter_for_validation_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        _Doc.model_validate({"name": "", "size": -1})
    text = format_validation_error(caught.value)
    assert text == "name: String should have at least 1 character; size: size must not be negative"
    assert format_validation_error(caught.value, prefix="models.fast").startswith("models.fast.name: ")
    with pytest.raises(ValidationError) as whole:
        _Doc.model_validate([1])
    assert format_validation_error(whole.value, top="(top)").startswith("(top): ")
    assert not format_validation_error(whole.value).startswith(":")


# --------------------------------------------------------------------------- one RPC per approval


class _Recorder(Interceptor):
    """Records every workflow RPC the client makes through its handles."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _RecordingOutbound(next, self.calls)


class _RecordingOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, calls: list[str]) -> None:
        super().__init__(next)
        self._calls = calls

    async def describe_workflow(self, input: DescribeWorkflowInput) -> Description:
        self._calls.append("describe")
        return await super().describe_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        self._calls.append(f"query {input.query}")
        return await super().query_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        self._calls.append(f"signal {input.signal}")
        await super().signal_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        self._calls.append(f"update {input.update}")
        return await super().start_workflow_update(input)


def _recording_client(client: Client) -> tuple[Client, list[str]]:
    recorder = _Recorder()
    config = client.config()
    config["interceptors"] = [*config["interceptors"], recorder]
    return Client(**config), recorder.calls


@pytest.mark.integration
async def test_an_approval_is_one_rpc(dev_server: Any, keel_settings: Settings) -> None:
    watcher = Keel(dev_server.client, settings=keel_settings)
    recording, calls = _recording_client(dev_server.client)
    keel = Keel(recording, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        started = await watcher.start("travel", GOAL)
        view = await wait_for_review(started)
        assert view.pending_review is not None

        calls.clear()
        outcome = await keel.handle(started.workflow_id).approve(reviewer="ana", comment="ok")
        # No describe, no status query: the update's validator picks the pending request.
        assert calls == ["update review"]
        assert outcome.request_id == view.pending_review.request_id
        assert (await started.result(wait=30)).status == SagaStatus.COMPLETED

        # Its refusals come from the same one call.
        calls.clear()
        with pytest.raises(ReviewRejected, match="the run has ended"):
            await keel.handle(started.workflow_id).approve(reviewer="ana")
        assert calls == ["update review"]
        calls.clear()
        with pytest.raises(RunNotFound):
            await keel.handle("keel-travel-no-such-run").reject(reviewer="ana", reason="no")
        assert calls == ["update review"]


@pytest.mark.integration
async def test_a_second_decision_is_refused_by_the_validator(
    dev_server: Any, keel_settings: Settings
) -> None:
    keel = Keel(dev_server.client, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        run = await keel.start("travel", GOAL)
        await wait_for_review(run)
        await run.approve(reviewer="ana")
        # Decided already: the run says no (it may also have ended by now), the client asks nothing first.
        with pytest.raises(ReviewRejected, match="no review is pending|has ended|already has a decision"):
            await keel.handle(run.workflow_id).approve(reviewer="bob")
        assert (await run.result(wait=30)).status == SagaStatus.COMPLETED
