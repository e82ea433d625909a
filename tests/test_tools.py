"""`@tool`: schemas from signatures, every return value a `ToolResult`, compensations, review conditions."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentkeel import errors
from agentkeel.agents import Agent, Team
from agentkeel.contracts import CompensationRequest, ToolRequest, ToolResult
from agentkeel.review_conditions import ConditionError, parse_condition
from agentkeel.tools import tool, tool_context

pytestmark = pytest.mark.unit


def request(**arguments: Any) -> ToolRequest:
    return ToolRequest(arguments=arguments, idempotency_key="wf:run:4", correlation_id="c-1", step=4)


async def run(t: Any, req: ToolRequest) -> ToolResult:
    return await ActivityEnvironment().run(t.activities()[0], req)


class Refund(BaseModel):
    order_id: str
    amount_usd: float


@tool(requires_review="amount_usd > 500")
async def issue_refund(order_id: str, amount_usd: float, note: str = "") -> dict[str, Any]:
    """Refund an order.

    Longer text the model is not told.
    """
    return {"refund_id": f"R-{order_id}", "key": tool_context().idempotency_key, "note": note}


@issue_refund.compensate
async def void_refund(
    order_id: str, amount_usd: float, note: str = "", *, idempotency_key: str, result: dict | None
) -> str:
    return f"voided {order_id} {idempotency_key} {result}"


def test_the_schema_and_description_come_from_the_signature_and_docstring():
    spec = issue_refund.spec
    assert spec.name == "issue_refund" and spec.description == "Refund an order."
    assert spec.parameters["required"] == ["order_id", "amount_usd"]
    assert spec.parameters["properties"]["amount_usd"] == {"type": "number"}
    assert spec.parameters["additionalProperties"] is False
    assert spec.compensation == "void_refund" and spec.review_when == "amount_usd > 500"


def test_one_pydantic_model_is_the_schema():
    @tool
    def refund(args: Refund) -> Refund:
        """Refund."""
        return args

    assert set(refund.spec.parameters["properties"]) == {"order_id", "amount_usd"}


async def test_the_tool_gets_its_arguments_and_its_context():
    result = await run(issue_refund, request(order_id="A1", amount_usd=20))
    assert result.output == {"refund_id": "R-A1", "key": "wf:run:4", "note": ""}


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ({"a": 1}, {"a": 1}),
        ("done", {"result": "done"}),
        (42, {"result": 42}),
        (None, {}),
        (Refund(order_id="x", amount_usd=1.5), {"order_id": "x", "amount_usd": 1.5}),
        (ToolResult(output={"x": 1}, summary="s"), {"x": 1}),
    ],
)
async def test_whatever_a_tool_returns_becomes_a_tool_result(value: Any, output: dict[str, Any]):
    @tool
    async def anything() -> Any:
        return value

    assert (await run(anything, request())).output == output


async def test_a_value_that_cannot_be_serialized_fails_the_step_clearly():
    @tool
    async def leaky() -> Any:
        return {"lock": threading.Lock()}

    with pytest.raises(ApplicationError) as failed:
        await run(leaky, request())
    assert failed.value.type == errors.TOOL_FAILED and failed.value.non_retryable
    assert "cannot be serialized" in failed.value.message


async def test_arguments_the_model_got_wrong_go_back_as_a_tool_error():
    with pytest.raises(ApplicationError) as failed:
        await run(issue_refund, request(order_id="A1", amount_usd="lots", extra=1))
    assert failed.value.type == errors.TOOL_INVALID_ARGUMENTS and failed.value.non_retryable
    assert "amount_usd" in failed.value.message and "extra" in failed.value.message


async def test_a_sync_tool_runs_off_the_event_loop():
    seen: list[str] = []

    @tool
    def blocking(n: int) -> int:
        seen.append(threading.current_thread().name)
        return n * 2

    assert (await run(blocking, request(n=21))).output == {"result": 42}
    assert seen[0].startswith("keel-tool")


async def test_a_compensation_gets_the_arguments_the_key_and_the_result_or_none():
    act = issue_refund.activities()[1]
    req = CompensationRequest(
        idempotency_key="wf:run:4",
        correlation_id="c",
        tool="issue_refund",
        arguments={"order_id": "A1", "amount_usd": 20},
        result={"refund_id": "R-A1"},
    )
    done = await ActivityEnvironment().run(act, req)
    assert done.output == {"result": "voided A1 wf:run:4 {'refund_id': 'R-A1'}"}
    lost = await ActivityEnvironment().run(act, req.model_copy(update={"result": {}}))
    assert lost.output == {"result": "voided A1 wf:run:4 None"}


def test_review_conditions_parse_and_evaluate():
    cond = parse_condition('amount_usd > 500 and currency == "USD" or tier in ["gold"]')
    assert cond.evaluate({"amount_usd": 501, "currency": "USD"})
    assert not cond.evaluate({"amount_usd": 501, "currency": "EUR"})
    assert cond.evaluate({"tier": "gold"})
    assert not cond.evaluate({"amount_usd": "lots", "currency": "USD"})  # another type: does not hold
    assert not cond.evaluate({})
    assert parse_condition("order.total >= 10").evaluate({"order": {"total": 10}})
    for bad in ("", "amount_usd >", "amount_usd ~ 3", "amount_usd > 5 nor x < 2", "tier in 3"):
        with pytest.raises(ConditionError):
            parse_condition(bad)


def test_a_team_in_python_builds_the_same_spec_and_typos_fail_when_it_is_built():
    billing = Agent(name="billing", instructions="Refund.", tools=[issue_refund])
    triage = Agent(name="triage", instructions="Triage.", handoffs=[billing])
    team = Team(name="support", entry=triage, agents=[triage, billing], review={"timeout_s": 60})
    assert team.spec.entry == "triage" and team.spec.agent("triage").handoffs == ["billing"]
    assert [t.name for t in team.spec.tools] == ["issue_refund"]
    names = {a.__temporal_activity_definition.name for a in team.activities()}
    assert names == {"issue_refund", "void_refund"}
    with pytest.raises(ValueError, match="unknown agent 'biling'"):
        Team(
            name="support", entry=triage, agents=[Agent(name="triage", instructions="x", handoffs=["biling"])]
        )


def test_keel_teams_shows_compensations_and_review_conditions():
    from agentkeel.starters.render import render_teams

    billing = Agent(name="billing", instructions="Refund.", tools=[issue_refund])
    team = Team(name="support", entry=billing, agents=[billing], review={"reviewers": ["ana"]})
    text = render_teams({"support": team.spec})
    assert "tool issue_refund: undone by void_refund; reviewed when amount_usd > 500" in text
    assert "reviewers ana" in text
