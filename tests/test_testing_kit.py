"""A user's agents, tested the way a user would: `@tool`, `Team`, `App` and `agentkeel.testing`.

Nothing here reaches into the platform's internals: it is the test suite a new project starts from.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from agentkeel import Agent, App, SagaStatus, Team, tool, tool_context
from agentkeel.testing import (
    ScriptedModel,
    answer,
    assert_compensated_in_reverse,
    assert_each_side_effect_once,
    call,
    handoff,
    keel_test_env,
    replay_histories,
)

pytestmark = pytest.mark.unit

LEDGER: list[tuple[str, str]] = []
"""(action, idempotency key) of every side effect the tools below did."""


@tool(requires_review="amount_usd > 500")
async def issue_refund(order_id: str, amount_usd: float) -> dict[str, Any]:
    """Refund an order."""
    LEDGER.append(("refund", tool_context().idempotency_key))
    return {"refund_id": f"R-{order_id}", "amount_usd": amount_usd}


@issue_refund.compensate
async def void_refund(order_id: str, amount_usd: float, *, idempotency_key: str, result: dict | None) -> str:
    LEDGER.append(("void", idempotency_key))
    return f"voided {order_id}"


class Ticket(BaseModel):
    id: str
    state: str


@tool
def open_ticket(subject: str) -> Ticket:
    """Open a support ticket (a sync tool: it runs on the tool pool)."""
    LEDGER.append(("ticket", tool_context().idempotency_key))
    return Ticket(id="T-1", state="open")


@open_ticket.compensate
def close_ticket(subject: str, *, idempotency_key: str) -> None:
    LEDGER.append(("close", idempotency_key))


@tool
async def flaky_lookup(order_id: str) -> str:
    """Look an order up."""
    raise ApplicationError(f"order {order_id} does not exist", type="NotFound", non_retryable=True)


ATTEMPTS: list[int] = []


@tool(max_attempts=2, timeout_s=5)
async def broken_lookup(order_id: str) -> str:
    """Look an order up in a system that is down."""
    ATTEMPTS.append(1)
    raise RuntimeError("the order system is down")


billing = Agent(
    name="billing", instructions="Refund what triage asks.", tools=[issue_refund, flaky_lookup, broken_lookup]
)
triage = Agent(
    name="triage", instructions="Open a ticket, then hand off.", tools=[open_ticket], handoffs=[billing]
)
support = Team(name="support", entry=triage, agents=[triage, billing], review={"timeout_s": 3600})
app = App(name="support-app", teams=[support])


def script(amount: float) -> ScriptedModel:
    return ScriptedModel(
        [
            call("open_ticket", subject="refund A1"),
            handoff("billing", "refund A1"),
            call("issue_refund", order_id="A1", amount_usd=amount),
            answer("Refunded."),
        ]
    )


@pytest.fixture(autouse=True)
def clean_ledger() -> None:
    LEDGER.clear()


async def test_a_small_refund_needs_no_review_and_completes(time_env: Any) -> None:
    async with keel_test_env(app, script(20), env=time_env) as env:
        result = await env.run_team("support", "Refund order A1")
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert result.reviews == []
    assert [a for a, _ in LEDGER] == ["ticket", "refund"]
    assert_each_side_effect_once(key for _, key in LEDGER)


async def test_a_large_refund_waits_for_approval(time_env: Any) -> None:
    async with keel_test_env(app, script(900), env=time_env) as env:
        result = await env.run_team(support, "Refund order A1", decisions=["approve"])
        assert await replay_histories_of(env)
    assert result.status == SagaStatus.COMPLETED
    assert [r.decision for r in result.reviews] == ["approve"] and result.reviews[0].tool == "issue_refund"


async def test_a_rejected_refund_is_compensated_in_reverse(time_env: Any) -> None:
    async with keel_test_env(app, script(900), env=time_env) as env:
        result = await env.run_team("support", "Refund order A1", decisions=["reject"])
    assert result.status == SagaStatus.COMPENSATED
    assert_compensated_in_reverse(result)
    assert [a for a, _ in LEDGER] == ["ticket", "close"]  # the refund never ran: only the ticket is undone


async def test_an_edited_refund_runs_with_the_reviewers_arguments(time_env: Any) -> None:
    async with keel_test_env(app, script(900), env=time_env) as env:
        result = await env.run_team(
            "support", "Refund order A1", decisions=[("edit", {"order_id": "A1", "amount_usd": 450.0})]
        )
    assert result.status == SagaStatus.COMPLETED
    assert result.reviews[0].arguments == {"order_id": "A1", "amount_usd": 450.0}


async def test_a_tool_error_and_wrong_arguments_go_back_to_the_model(time_env: Any) -> None:
    model = ScriptedModel(
        [
            handoff("billing"),
            call("issue_refund", order_id="A1", amount_usd="lots"),  # wrong type: back to the model
            call("issue_refund", '{"order_id": "A1", '),  # not JSON
            call("issue_refund", order_id="A1", amount_usd=10),
            answer("Done."),
        ]
    )
    async with keel_test_env(app, model, env=time_env) as env:
        result = await env.run_team("support", "Refund order A1")
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert len([s for s in result.steps if s.kind == "tool_error"]) == 2
    told = [m.content or "" for m in model.requests[-1].messages if m.role == "tool"]
    assert sum("error" in c for c in told) == 2
    assert [a for a, _ in LEDGER] == ["refund"]


async def test_a_tool_that_fails_for_good_compensates_what_was_done(time_env: Any) -> None:
    model = ScriptedModel(
        [call("open_ticket", subject="x"), handoff("billing"), call("flaky_lookup", order_id="Z9")]
    )
    async with keel_test_env(app, model, env=time_env) as env:
        result = await env.run_team("support", "Look up Z9")
    assert result.status == SagaStatus.COMPENSATED
    assert "order Z9 does not exist" in (result.reason or "")
    assert [a for a, _ in LEDGER] == ["ticket", "close"]


async def replay_histories_of(env: Any) -> bool:
    """The runs of this test replay on today's code (what `replay_histories(folder)` does for files)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        for i, history in enumerate(env.histories):
            (Path(folder) / f"run{i}.json").write_text(history.to_json())
        return bool(await replay_histories(folder))


async def test_a_tool_that_keeps_raising_fails_within_its_own_retry_policy(time_env: Any) -> None:
    ATTEMPTS.clear()
    model = ScriptedModel(
        [call("open_ticket", subject="x"), handoff("billing"), call("broken_lookup", order_id="Z9")]
    )
    async with keel_test_env(app, model, env=time_env) as env:
        result = await env.run_team("support", "Look up Z9")
    assert result.status == SagaStatus.COMPENSATED
    assert "the order system is down" in (result.reason or "")
    assert len(ATTEMPTS) == 2  # max_attempts=2, then the saga compensates
    assert [a for a, _ in LEDGER] == ["ticket", "close"]
