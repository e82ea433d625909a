"""MCP tools end to end: the example tracker over stdio and streamable HTTP, on a real dev server.

Each test starts the tracker itself (stdio: the worker spawns it; HTTP: the test runs it on a free
port) and a worker with the team on it; the model is scripted in process. Runs are approved and
rejected (the rejection closes the filed ticket by compensation), the HTTP server is killed while
a run needs it, and restarted with another tool list. `KEEL_RECORD_HISTORIES=1` rewrites the
checked-in `tests/histories/mcp_*.json` from these runs; every history replays on today's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer, Worker

from agentkeel.app import App
from agentkeel.contracts import ReviewInput, SagaRequest, SagaResult, SagaStatusView
from agentkeel.examples.tickets import tickets_server, tickets_team
from agentkeel.mcp import MCPServer
from agentkeel.names import AGENT_SAGA_WORKFLOW
from agentkeel.outcomes import saga_result
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.testing import ScriptedModel, answer, call
from tests.fixtures.llm import free_port
from tests.mcp_servers import TicketsHTTP, tickets_in

pytestmark = pytest.mark.integration

HISTORY_DIR = Path(__file__).parent / "histories"
RECORDED: list[WorkflowHistory] = []


def _script() -> ScriptedModel:
    return ScriptedModel(
        [
            call("create_ticket", title="Checkout returns 500", priority="urgent"),
            call("assign_ticket", number=1, assignee="oncall"),
            answer("Ticket #1 filed and assigned to oncall."),
        ]
    )


@asynccontextmanager
async def _worker(
    client: Any, task_queue: str, server: MCPServer, model: ScriptedModel, home: Path
) -> AsyncIterator[App]:
    app = App(name="tickets", teams=[tickets_team(server)])
    plugin = AgentkeelPlugin(settings=Settings(home=home), apps=[app])
    async with Worker(client, task_queue=task_queue, activities=[model.activity()], plugins=[plugin]):
        yield app


async def _start(
    client: Any, task_queue: str, goal: str = "Checkout returns 500"
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        AGENT_SAGA_WORKFLOW,
        SagaRequest(goal=goal, team_name="tickets"),
        id=f"keel-tickets-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=SagaResult,
    )


async def _view(handle: WorkflowHandle[Any, Any]) -> SagaStatusView:
    return await handle.query("status", result_type=SagaStatusView)


async def _wait(handle: WorkflowHandle[Any, Any], ok: Any, within: float = 30) -> SagaStatusView:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        view = await _view(handle)
        if ok(view):
            return view
        assert not view.status.is_final, f"run ended {view.status}: {view.last_error}"
        assert asyncio.get_running_loop().time() < deadline, f"still {view.status}: {view.waiting_for}"
        await asyncio.sleep(0.1)


async def _awaiting_review(handle: WorkflowHandle[Any, Any]) -> SagaStatusView:
    return await _wait(handle, lambda v: v.status == SagaStatus.AWAITING_REVIEW)


async def _decide(handle: WorkflowHandle[Any, Any], decision: str) -> None:
    await handle.execute_update("review", ReviewInput(decision=decision, reviewer="ana"))  # type: ignore[arg-type]


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    history = await handle.fetch_history()
    RECORDED.append(history)
    if os.environ.get("KEEL_RECORD_HISTORIES"):
        (HISTORY_DIR / f"{name}.json").write_text(history.to_json())


@pytest.fixture
def http_tickets(tmp_path: Path):
    server = TicketsHTTP(store=tmp_path / "tickets.json").start()
    yield server
    server.stop()


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_stdio_tracker_approved_and_rejected(dev_server, task_queue, tmp_path, decision):
    store = tmp_path / "tickets.json"
    model = _script()
    async with _worker(dev_server.client, task_queue, tickets_server(store=store), model, tmp_path):
        handle = await _start(dev_server.client, task_queue)
        view = await _awaiting_review(handle)
        assert view.pending_review.tool == "assign_ticket"  # destructiveHint: reviewed by default
        assert tickets_in(store)[1]["status"] == "open"
        await _decide(handle, decision)
        result = await saga_result(handle)
    tickets = tickets_in(store)
    if decision == "approve":
        assert result.status == SagaStatus.COMPLETED, result.reason
        assert tickets[1]["status"] == "open" and tickets[1]["assignee"] == "oncall"
    else:
        assert result.status == SagaStatus.COMPENSATED, result.reason
        assert [c.compensation for c in result.compensations] == ["tickets.close_ticket"]
        assert not [t for t in tickets.values() if t["status"] == "open"], tickets
        assert tickets[1]["reason"] == "the run did not finish"
    # The tools offered are those listed at the start, close_ticket filtered out.
    assert [t.name for t in model.requests[0].tools] == ["list_tickets", "create_ticket", "assign_ticket"]
    await _record(handle, {"approve": "mcp_stdio_approved", "reject": "mcp_stdio_rejected"}[decision])


async def test_http_tracker_rejected_closes_the_ticket(dev_server, task_queue, tmp_path, http_tickets):
    async with _worker(
        dev_server.client, task_queue, tickets_server(url=http_tickets.url), _script(), tmp_path
    ):
        handle = await _start(dev_server.client, task_queue)
        await _awaiting_review(handle)
        await _decide(handle, "reject")
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPENSATED
    assert [t["status"] for t in tickets_in(http_tickets.store).values()] == ["closed"]
    # The idempotency key went to the server in `_meta` and is in the run's record.
    step = next(s for s in result.steps if s.name == "create_ticket")
    assert f"(key {handle.id}:" in step.detail
    done = json.loads(http_tickets.store.read_text())["done"]  # what the tracker deduplicates by
    key = step.detail.rsplit("(key ", 1)[1].rstrip(")")
    assert f"create_ticket:{key}" in done and f"close_ticket:{key}:undo" in done
    await _record(handle, "mcp_http_rejected")


async def test_http_tracker_killed_mid_run_the_run_waits(dev_server, task_queue, tmp_path, http_tickets):
    server = tickets_server(url=http_tickets.url).model_copy(update={"breaker_reset_s": 2.0})
    async with _worker(dev_server.client, task_queue, server, _script(), tmp_path):
        handle = await _start(dev_server.client, task_queue)
        await _awaiting_review(handle)
        http_tickets.kill()
        await _decide(handle, "approve")
        view = await _wait(
            handle, lambda v: "MCPUnavailable" in (v.last_error or "") or "Circuit" in (v.last_error or "")
        )
        assert "tickets" in view.last_error
        await asyncio.sleep(1.0)
        http_tickets.start()  # the same store: the ticket filed before the crash is still there
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert tickets_in(http_tickets.store)[1]["assignee"] == "oncall"
    await _record(handle, "mcp_http_server_killed")


async def test_http_tracker_changes_its_tools_mid_run(dev_server, task_queue, tmp_path, http_tickets):
    model = _script()
    async with _worker(dev_server.client, task_queue, tickets_server(url=http_tickets.url), model, tmp_path):
        handle = await _start(dev_server.client, task_queue)
        await _awaiting_review(handle)
        offered = [t.model_dump() for t in model.requests[0].tools]
        http_tickets.stop()
        http_tickets.start(variant="v2")  # a new tool, another description
        await _decide(handle, "approve")
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert len(model.requests) == 3
    for request in model.requests:
        assert [t.model_dump() for t in request.tools] == offered
    assert "purge_tickets" not in json.dumps(offered) and "v2" not in json.dumps(offered)
    await _record(handle, "mcp_http_tools_changed")


async def test_unreachable_server_fails_the_run_at_start(dev_server, task_queue, tmp_path):
    server = tickets_server(url=f"http://127.0.0.1:{free_port()}/mcp")
    async with _worker(dev_server.client, task_queue, server, _script(), tmp_path):
        handle = await _start(dev_server.client, task_queue)
        result = await saga_result(handle)
    assert result.status == SagaStatus.FAILED
    assert "MCP server 'tickets' cannot be listed" in result.reason and "MCPUnavailable" in result.reason
    assert result.steps == []
    await _record(handle, "mcp_unreachable_at_start")


async def test_replay_mcp_histories():
    assert RECORDED, "the tests above record their histories"
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for history in RECORDED:
        await replayer.replay_workflow(history)


@pytest.mark.unit
async def test_replay_checked_in_mcp_histories():
    files = sorted(HISTORY_DIR.glob("mcp_*.json"))
    assert {f.stem for f in files} >= {"mcp_stdio_approved", "mcp_stdio_rejected", "mcp_http_rejected"}
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for path in files:
        await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, json.loads(path.read_text())))
