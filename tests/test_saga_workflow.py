"""`AgentSagaWorkflow` on the time-skipping test server, with a scripted LLM and the real travel tools."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError
from temporalio.worker import Replayer

from agentkeel.contracts import (
    Budget,
    ReviewInput,
    SagaResult,
    SagaStatusView,
)
from agentkeel.outcomes import saga_result
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.workflows.agent_saga import AgentSagaWorkflow
from tests.saga_doubles import (
    TRAVEL_SCRIPT,
    ScriptedLLM,
    failing_compensation,
    saga_worker,
    start_saga,
    travel_team,
    travel_with_review,
)

pytestmark = pytest.mark.unit

HISTORIES: list[Any] = []
"""Every finished test history, replayed at the end of the module."""


async def status_of(handle: WorkflowHandle, rpc_timeout: timedelta | None = None) -> SagaStatusView:
    return await handle.query(AgentSagaWorkflow.status, rpc_timeout=rpc_timeout)


async def wait_for_review(handle: WorkflowHandle, within: float = 20) -> SagaStatusView:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        try:
            view = await status_of(handle, rpc_timeout=timedelta(seconds=2))
        except RPCError:
            # The time-skipping server can lose a query that reaches a run as it continues
            # as new (the query waits on the closed run until its timeout): ask again.
            continue
        if view.pending_review is not None:
            return view
        if view.status.is_final:
            raise AssertionError(f"run ended ({view.status}) without a review: {view.last_error}")
        await asyncio.sleep(0.05)
    raise AssertionError("no review requested in time")


async def finish(handle: WorkflowHandle) -> SagaResult:
    result = await saga_result(handle)
    HISTORIES.append(await handle.fetch_history())
    return result


def ledger_actions(ledger: Any, workflow_id: str) -> list[str]:
    return [e.action for e in ledger.entries(workflow_id)]


@pytest.fixture
async def client(time_env: Any) -> Client:
    return time_env.client


async def test_approved_run_completes_with_each_ledger_entry_once(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        view = await wait_for_review(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW
        assert view.pending_review.tool == "charge_card"
        assert view.pending_review.arguments["amount_usd"] == 1123.5
        assert view.active_agent == "planner"
        outcome = await handle.execute_update(
            AgentSagaWorkflow.review,
            ReviewInput(decision="approve", reviewer="ana"),
        )
        assert outcome.decision == "approve"
        result = await finish(handle)
        assert result.status == SagaStatus.COMPLETED, result.reason
        assert result.output == "Your trip is booked."
        assert ledger_actions(ledger, handle.id) == ["book_flight", "book_hotel", "charge_card"]
        assert [r.decision for r in result.reviews] == ["approve"]
        assert result.tokens == 7 * 100
        assert {s.agent for s in result.steps} == {"planner", "flights", "hotels"}
        # idempotency keys are workflow id + step number
        keys = [e.idempotency_key for e in ledger.entries(handle.id)]
        assert all(k.startswith(f"{handle.id}:") for k in keys) and len(set(keys)) == 3
        transcript = await handle.query(AgentSagaWorkflow.transcript)
        kinds = [t.kind for t in transcript]
        assert kinds.count("handoff") == 3 and "decision" in kinds


async def test_reject_compensates_in_reverse_order(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        outcome = await handle.execute_update(
            AgentSagaWorkflow.review,
            ReviewInput(decision="reject", reviewer="ana", comment="too expensive"),
        )
        assert outcome.status == SagaStatus.COMPENSATING
        result = await finish(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert "too expensive" in (result.reason or "")
        assert [c.compensation for c in result.compensations] == ["cancel_hotel", "cancel_flight"]
        assert all(c.status == "done" for c in result.compensations)
        assert ledger_actions(ledger, handle.id) == [
            "book_flight",
            "book_hotel",
            "cancel_hotel",
            "cancel_flight",
        ]


async def test_signals_from_the_stock_cli_shape_approve_and_bad_ones_are_recorded(
    client, task_queue, tmp_path
):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        await handle.signal("approve", {"reviewr": "typo"})  # malformed: unknown field
        await handle.signal("approve", "not an object")
        view = await status_of(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW
        assert len(view.rejected_signals) == 2
        assert "reviewr" in view.rejected_signals[0].error
        await handle.signal("approve", {"reviewer": "ana", "comment": "fine"})
        await handle.signal("approve", {"reviewer": "bob"})  # duplicate: no effect
        result = await finish(handle)
        assert result.status == SagaStatus.COMPLETED
        assert [(r.reviewer, r.via) for r in result.reviews] == [("ana", "signal")]
        assert ledger_actions(ledger, handle.id).count("charge_card") == 1


async def test_edit_and_approve_validates_arguments(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        view = await wait_for_review(handle)
        rid = view.pending_review.request_id
        with pytest.raises(WorkflowUpdateFailedError) as bad:
            await handle.execute_update(
                AgentSagaWorkflow.review,
                ReviewInput(reviewer="ana", decision="edit", request_id=rid, arguments={"amount_usd": -5}),
            )
        assert "amount_usd" in str(bad.value.cause) or "description" in str(bad.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as wrong_id:
            await handle.execute_update(
                AgentSagaWorkflow.review, ReviewInput(reviewer="ana", decision="approve", request_id="nope")
            )
        assert "not the pending one" in str(wrong_id.value.cause)
        outcome = await handle.execute_update(
            AgentSagaWorkflow.review,
            ReviewInput(
                reviewer="ana",
                decision="edit",
                request_id=rid,
                arguments={"amount_usd": 900.0, "description": "discounted"},
            ),
        )
        assert outcome.decision == "edit"
        result = await finish(handle)
        assert result.status == SagaStatus.COMPLETED
        charge = [e for e in ledger.entries(handle.id) if e.action == "charge_card"]
        assert [c.amount_usd for c in charge] == [900.0]


async def test_review_timeout_rejects_and_compensates(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    team = travel_with_review(timeout_s=3600, on_timeout="reject")
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue, team=team)
        result = await finish(handle)  # the test server skips the hour
        assert result.status == SagaStatus.COMPENSATED
        assert result.reviews[0].decision == "timeout"
        assert ledger_actions(ledger, handle.id)[-2:] == ["cancel_hotel", "cancel_flight"]


async def test_review_timeout_escalates_then_rejects(client, task_queue, tmp_path, time_env):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    team = travel_with_review(timeout_s=600, on_timeout="escalate", escalation_timeout_s=1200)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=team)
        await wait_for_review(handle)
        await time_env.sleep(700)
        view = await status_of(handle)
        assert view.escalated and view.status == SagaStatus.AWAITING_REVIEW
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(
            __import__("agentkeel.search_attributes").search_attributes.KEEL_ESCALATED
        )
        result = await finish(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert result.reviews[0].decision == "timeout"


async def test_budget_exhaustion_stops_and_compensates(client, task_queue, tmp_path):
    script = dict(TRAVEL_SCRIPT)
    script[("hotels", 1)] = {**script[("hotels", 1)], "tokens": 5000}
    llm = ScriptedLLM(script)
    team = travel_team(budget=Budget(max_tokens=3000))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue, team=team)
        result = await finish(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert "token budget exhausted" in (result.reason or "")
        assert ledger_actions(ledger, handle.id) == [
            "book_flight",
            "book_hotel",
            "cancel_hotel",
            "cancel_flight",
        ]


async def test_handoff_ping_pong_ends_the_run(client, task_queue, tmp_path):
    script = {
        ("planner", t): {"tool_calls": [("transfer_to_flights", {"note": "you do it"})]} for t in range(1, 6)
    } | {("flights", t): {"tool_calls": [("transfer_to_planner", {"note": "no, you"})]} for t in range(1, 6)}
    llm = ScriptedLLM(script)
    team = travel_team()
    team.agents[1].handoffs = ["hotels", "planner"]
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=team)
        result = await finish(handle)
        assert result.status == SagaStatus.FAILED
        assert "ping-pong" in (result.reason or "")


async def test_invalid_tool_arguments_go_back_to_the_model(client, task_queue, tmp_path):
    script = dict(TRAVEL_SCRIPT)
    script[("flights", 1)] = {"tool_calls": [("book_flight", '{"origin": "Paris"')]}  # broken JSON
    script[("flights", 2)] = {"tool_calls": [("book_flight", {"origin": "Paris"})]}  # missing fields
    script[("flights", 3)] = TRAVEL_SCRIPT[("flights", 1)]
    script[("flights", 4)] = TRAVEL_SCRIPT[("flights", 2)]
    llm = ScriptedLLM(script)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        await handle.signal("approve", {"reviewer": "ana"})
        result = await finish(handle)
        assert result.status == SagaStatus.COMPLETED
        assert [s.kind for s in result.steps].count("tool_error") == 2
        tool_msgs = [m.content for m in llm.calls[3].messages if m.role == "tool"]
        assert any("invalid arguments" in (c or "") for c in tool_msgs)
        assert ledger_actions(ledger, handle.id).count("book_flight") == 1


async def test_too_many_invalid_tool_calls_fail_and_compensate(client, task_queue, tmp_path):
    script = dict(TRAVEL_SCRIPT)
    script.update({("hotels", t): {"tool_calls": [("book_hotel", {"city": "X"})]} for t in range(1, 8)})
    llm = ScriptedLLM(script)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        result = await finish(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert "too many invalid tool calls" in (result.reason or "")
        assert ledger_actions(ledger, handle.id) == ["book_flight", "cancel_flight"]


async def test_max_turns(client, task_queue, tmp_path):
    llm = ScriptedLLM({}, default={"tool_calls": [("charge_card", {"amount_usd": "a lot"})]})
    team = travel_team(max_turns=3, max_tool_errors=10)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=team)
        result = await finish(handle)
        assert result.status == SagaStatus.FAILED
        assert "max_turns" in (result.reason or "")


async def test_cancel_while_awaiting_review_compensates(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await saga_result(handle)
        assert isinstance(failure.value.cause, CancelledError)
        HISTORIES.append(await handle.fetch_history())
        view = await status_of(handle)
        assert view.status == SagaStatus.CANCELLED
        assert [c.compensation for c in view.compensations] == ["cancel_hotel", "cancel_flight"]
        assert ledger_actions(ledger, handle.id)[-2:] == ["cancel_hotel", "cancel_flight"]


async def test_a_compensation_that_keeps_failing_is_reported(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    attempts: list[int] = []
    broken = failing_compensation("cancel_hotel", attempts)
    async with saga_worker(
        client, task_queue, llm, tmp_path / "ledger.db", replace={"cancel_hotel": broken}
    ) as ledger:
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        await handle.signal("reject", {"reviewer": "ana", "reason": "no"})
        result = await finish(handle)
        assert result.status == SagaStatus.FAILED
        assert result.uncompensated == ["book_hotel (step 6)"] or result.uncompensated[0].startswith(
            "book_hotel"
        )
        assert [c.status for c in result.compensations] == ["failed", "done"]
        assert len(attempts) == 10  # COMPENSATION_RETRY.maximum_attempts, retried durably
        # the flight was still cancelled after the hotel's compensation failed
        assert ledger_actions(ledger, handle.id)[-1] == "cancel_flight"


async def test_continue_as_new_carries_the_saga(client, task_queue, tmp_path, monkeypatch):
    from temporalio import workflow as wf

    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    calls = {"n": 0}
    continued = threading.Event()
    real = wf.Info.is_continue_as_new_suggested

    def suggested(self: Any) -> bool:
        # Suggest once, at the fourth turn boundary of the first run (after the flight was booked).
        calls["n"] += 1
        if calls["n"] > 4:
            continued.set()  # the next run asks: the continue-as-new is behind us
        return calls["n"] == 4 or real(self)

    monkeypatch.setattr(wf.Info, "is_continue_as_new_suggested", suggested)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db") as ledger:
        handle = await start_saga(client, task_queue)
        # Ask the worker nothing until the run has continued as new: the time-skipping server
        # can lose a query or a signal that meets a run just as it continues as new.
        assert await asyncio.to_thread(continued.wait, 20)
        await wait_for_review(handle)
        await handle.signal("reject", {"reviewer": "ana", "reason": "changed my mind"})
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert ledger_actions(ledger, handle.id) == [
            "book_flight",
            "book_hotel",
            "cancel_hotel",
            "cancel_flight",
        ]
        history = await client.get_workflow_handle(handle.id).fetch_history()
        assert history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id


async def test_replay_every_history():
    assert HISTORIES, "the tests above record their histories"
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for history in HISTORIES:
        await replayer.replay_workflow(history)


def test_timedelta_policies_are_sane():
    from agentkeel.workflows import policies

    assert policies.LLM_HEARTBEAT < policies.LLM_START_TO_CLOSE / 4
    assert policies.LLM_RETRY.maximum_attempts == 5
    assert policies.LLM_RETRY.initial_interval == timedelta(seconds=2)
