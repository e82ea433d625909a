"""`ReviewDesk` on its own: what the validator refuses, what the signals and the update record."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter

from agentkeel.contracts import ReviewInput, ReviewOutcome, ReviewPolicy, ReviewRequest
from agentkeel.names import APPROVE_SIGNAL, REJECT_SIGNAL, REVIEW_UPDATE
from agentkeel.search_attributes import SagaStatus
from agentkeel.workflows.review import ReviewDesk

pytestmark = pytest.mark.unit

CONVERTER = pydantic_data_converter.payload_converter
CHARGE = {"type": "object", "properties": {"amount_usd": {"type": "number"}}, "required": ["amount_usd"]}


class Host:
    """The run, as the desk sees it."""

    def __init__(self) -> None:
        self.status = SagaStatus.AWAITING_REVIEW
        self.refused: list[tuple[str, str, str]] = []
        self.escalated: list[str] = []

    def refuse(self, name: str, payload: str, error: str) -> None:
        self.refused.append((name, payload, error))

    def escalate(self, request: ReviewRequest) -> None:
        self.escalated.append(request.request_id)


def desk_with(policy: ReviewPolicy | None = None, *, pending: bool = True) -> tuple[ReviewDesk, Host]:
    host = Host()
    desk = ReviewDesk(
        host,
        policy=lambda: policy or ReviewPolicy(),
        workflow_id="keel-travel-1",
        payload_converter=CONVERTER,
    )
    if pending:
        desk.open(
            ReviewRequest(
                request_id="rv-7-abc",
                kind="tool",
                agent="booker",
                tool="charge_card",
                arguments={"amount_usd": 12.5},
                parameters=CHARGE,
            )
        )
    return desk, host


def raw(value: Any) -> RawValue:
    return RawValue(CONVERTER.to_payload(value))


def decision(kind: str = "approve", **fields: Any) -> ReviewInput:
    return ReviewInput(decision=kind, reviewer=fields.pop("reviewer", "ana"), **fields)


@pytest.mark.parametrize(
    ("setup", "given", "refusal"),
    [
        ("nothing pending", decision(), "no review is pending"),
        ("ended", decision(), "the run has ended"),
        ("pending", decision(request_id="rv-1-old"), "is not the pending one"),
        ("decided", decision(), "already has a decision being applied"),
        (
            "pending",
            decision("edit", arguments={"amount_usd": "lots"}),
            "do not fit the schema of charge_card",
        ),
    ],
)
def test_validator_refuses_what_cannot_apply(setup: str, given: ReviewInput, refusal: str):
    desk, host = desk_with(pending=setup != "nothing pending")
    if setup == "ended":
        host.status = SagaStatus.COMPENSATED
    if setup == "decided":
        desk.signal("approve", raw({"reviewer": "bo"}))
    with pytest.raises(ValueError, match=refusal):
        desk.validate(given)


def test_validator_lets_through_good_decisions_and_duplicates():
    desk, _ = desk_with()
    desk.validate(decision("edit", arguments={"amount_usd": 10}, request_id="rv-7-abc"))
    desk.settle(
        ReviewOutcome(request_id="rv-7-abc", decision="approve", status=SagaStatus.RUNNING, message="ok")
    )
    desk.close()
    desk.validate(decision(request_id="rv-7-abc"))  # answered again by the handler


def test_a_final_answer_review_cannot_be_edited():
    desk, _ = desk_with(pending=False)
    desk.open(ReviewRequest(request_id="rv-3-x", kind="budget", agent="planner"))
    with pytest.raises(ValueError, match="cannot be edited"):
        desk.validate(decision("edit", arguments={}))


async def test_update_from_a_reviewer_without_authority_is_recorded_not_applied():
    desk, host = desk_with(ReviewPolicy(reviewers=["ops-*"]))
    outcome = await desk.decide(decision(reviewer="mallory", signature="c2ln"))
    assert outcome.refused and outcome.request_id == "rv-7-abc"
    assert outcome.message.startswith("refused: reviewer 'mallory' may not decide")
    assert desk.decision is None
    [(name, payload, error)] = host.refused
    assert name == REVIEW_UPDATE and "mallory" in payload and "c2ln" not in payload
    assert "may not decide" in error


async def test_a_duplicate_update_gets_the_recorded_outcome():
    desk, _ = desk_with()
    done = ReviewOutcome(request_id="rv-7-abc", decision="approve", status=SagaStatus.RUNNING, message="ok")
    desk.settle(done)
    desk.close()
    assert await desk.decide(decision(request_id="rv-7-abc")) == done


def test_an_approve_signal_becomes_the_decision_and_the_first_one_wins():
    desk, host = desk_with()
    desk.signal("approve", raw({"reviewer": "ana", "comment": "fine", "request_id": "rv-7-abc"}))
    desk.signal("reject", raw({"reviewer": "bo", "reason": "late"}))
    assert desk.decision is not None
    assert (desk.decision.decision, desk.decision.reviewer, desk.decision.comment) == (
        "approve",
        "ana",
        "fine",
    )
    assert desk.decision.via == "signal"
    assert host.refused == []


def test_a_reject_signal_carries_its_reason():
    desk, _ = desk_with()
    desk.signal("reject", raw({"reviewer": "ana", "reason": "too dear"}))
    assert desk.decision is not None
    assert (desk.decision.decision, desk.decision.comment) == ("reject", "too dear")


@pytest.mark.parametrize(
    ("pending", "payload", "error"),
    [
        (True, {}, 'malformed payload: a decision needs a non-empty reviewer ({"reviewer": "NAME"})'),
        (
            True,
            {"reviewer": "ana", "colour": "red"},
            "malformed payload: colour: Extra inputs are not permitted",
        ),
        (True, None, "malformed payload: a decision needs a non-empty reviewer"),
        (False, {"reviewer": "ana"}, "no review is pending"),
        (
            True,
            {"reviewer": "ana", "request_id": "rv-1-old"},
            "request 'rv-1-old' is not pending ('rv-7-abc' is)",
        ),
    ],
)
def test_signals_that_cannot_apply_are_refused_and_kept(pending: bool, payload: Any, error: str):
    desk, host = desk_with(pending=pending)
    desk.signal("reject", raw(payload))
    assert desk.decision is None
    [(name, _, said)] = host.refused
    assert name == REJECT_SIGNAL
    assert said.startswith(error)


def test_a_signal_from_someone_who_may_not_decide_is_refused():
    desk, host = desk_with(ReviewPolicy(reviewers=["ana"]))
    desk.signal("approve", raw({"reviewer": "bo"}))
    assert desk.decision is None
    assert host.refused[0][0] == APPROVE_SIGNAL and "may not decide" in host.refused[0][2]


def test_a_signal_repeating_a_settled_decision_is_a_quiet_no_op():
    desk, host = desk_with()
    desk.settle(
        ReviewOutcome(request_id="rv-7-abc", decision="approve", status=SagaStatus.RUNNING, message="ok")
    )
    desk.close()
    desk.signal("approve", raw({"reviewer": "ana", "request_id": "rv-7-abc"}))
    assert host.refused == [] and desk.decision is None
