"""The saga's state is one model: what a run holds is what continue-as-new carries, field for field."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from agentkeel.contracts import (
    SAGA_CHECKPOINT_RETIRED,
    ChatMessage,
    CompensationRequest,
    ConversationState,
    PendingCompensation,
    RejectedSignal,
    ReviewRecord,
    SagaCheckpoint,
    SagaRequest,
    StepRecord,
    TranscriptEntry,
)
from agentkeel.conversation import SummaryRef
from agentkeel.workflows.runbook import TRANSCRIPT_KEEP, RunBook, initial_state
from tests.saga_doubles import travel_team

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


REF_A, REF_B, REF_C, REF_D = (f"sha256:{c * 64}" for c in "abcd")


def full_checkpoint() -> SagaCheckpoint:
    """A checkpoint in which no field has its default value."""
    return SagaCheckpoint(
        team=travel_team(),
        correlation_id="corr-1",
        active_agent="booker",
        step=7,
        turns=3,
        handoffs=2,
        tool_errors=1,
        tokens=1234,
        cost_usd=0.0123,
        budget_extensions=1,
        messages=[
            ChatMessage(role="user", content="plan a trip"),
            ChatMessage(role="assistant", content="ok"),
        ],
        compensations=[
            PendingCompensation(
                step=5,
                name="book_flight",
                activity="cancel_flight",
                request=CompensationRequest(
                    idempotency_key="keel-x:run-1:5",
                    correlation_id="corr-1",
                    tool="book_flight",
                    result={"ref": "F1"},
                ),
            )
        ],
        steps=[StepRecord(step=5, kind="tool", agent="booker", name="book_flight", at=AT)],
        reviews=[
            ReviewRecord(
                request_id="rv-6-abc",
                kind="tool",
                tool="charge_card",
                decision="approve",
                reviewer="ana",
                via="update",
                at=AT,
            )
        ],
        transcript=[TranscriptEntry(kind="note", content="goal: plan a trip")],
        rejected_signals=[RejectedSignal(name="approve", payload="{}", error="no review is pending", at=AT)],
        visits=["planner", "booker"],
        escalated=True,
        runs=2,
        key_scope="keel-x:run-1",
        conversation=ConversationState(
            head=REF_A,
            pending=[
                ChatMessage(role="tool", tool_call_id="c1", name="flights", content="pre", content_ref=REF_B)
            ],
            pending_tokens=512,
            messages=41,
            prompts={"planner": REF_C},
            summaries={"planner": SummaryRef(ref=REF_D, covers=12, preview="the traveller wants")},
            next_tokens={"planner": 900},
            left_out={"planner": 11},
            summarized_at={"planner": 39},
        ),
    )


def request_with(checkpoint: SagaCheckpoint | None) -> SagaRequest:
    return SagaRequest(goal="plan a trip", team=travel_team(), correlation_id="corr-1", checkpoint=checkpoint)


def round_trip(value: Any, type_hint: type) -> Any:
    converter = pydantic_data_converter.payload_converter
    return converter.from_payload(converter.to_payload(value), type_hint)


def test_the_test_checkpoint_sets_every_field():
    # A field added to the state without a value here would not be checked below.
    checkpoint = full_checkpoint()
    for name, field in SagaCheckpoint.model_fields.items():
        assert getattr(checkpoint, name) != field.get_default(call_default_factory=True), name


def test_state_round_trips_through_the_converter():
    checkpoint = full_checkpoint()
    assert round_trip(checkpoint, SagaCheckpoint) == checkpoint
    request = request_with(checkpoint)
    assert round_trip(request, SagaRequest) == request


def test_a_run_carries_every_field_across_continue_as_new():
    carried = full_checkpoint()
    book = RunBook(request_with(carried), initial_state(request_with(carried)), pending_review=lambda: None)
    # The saga holds the pending compensations while the run lives...
    assert [c.name for c in book.saga.pending] == ["book_flight"]
    assert book.state.compensations == []
    # ...and the checkpoint is the same state, one run further on.
    next_input = round_trip(request_with(book.checkpoint()), SagaRequest)
    assert next_input.checkpoint == carried.model_copy(update={"runs": carried.runs + 1})
    # The input it came from is left as it was.
    assert request_with(carried).checkpoint == carried


def test_a_checkpoint_compacts_the_conversation_and_the_transcript():
    carried = full_checkpoint().model_copy(
        update={
            "messages": [ChatMessage(role="user", content=f"m{i}") for i in range(100)],
            "transcript": [
                TranscriptEntry(kind="note", content=f"t{i}") for i in range(TRANSCRIPT_KEEP + 10)
            ],
        }
    )
    book = RunBook(request_with(carried), initial_state(request_with(carried)), pending_review=lambda: None)
    checkpoint = book.checkpoint()
    assert len(checkpoint.messages) < 100
    assert checkpoint.messages[0].content == "m0"
    assert len(checkpoint.transcript) == TRANSCRIPT_KEEP
    assert checkpoint.transcript[-1].content == f"t{TRANSCRIPT_KEEP + 9}"


def test_a_stored_conversation_crosses_continue_as_new_whole():
    # Its head reference stands for every message: nothing is compacted, however long the run.
    carried = full_checkpoint().model_copy(update={"messages": []})
    book = RunBook(request_with(carried), initial_state(request_with(carried)), pending_review=lambda: None)
    for i in range(3):
        book.add_message(ChatMessage(role="user", content=f"note {i}"))
    checkpoint = book.checkpoint()
    assert checkpoint.messages == []
    assert checkpoint.conversation is not None and carried.conversation is not None
    assert checkpoint.conversation.head == REF_A
    assert [m.content for m in checkpoint.conversation.pending] == ["pre", "note 0", "note 1", "note 2"]
    assert checkpoint.conversation.pending_tokens > carried.conversation.pending_tokens


def test_a_fresh_run_starts_from_its_request():
    state = initial_state(request_with(None))
    assert state.team == travel_team()
    assert state.active_agent == travel_team().entry
    assert state.correlation_id == "corr-1"
    assert state.runs == 1 and state.key_scope is None


def test_checkpoints_recorded_by_earlier_versions_still_decode():
    # Earlier versions declared (and serialized as null) fields they never used.
    old = full_checkpoint().model_dump(mode="json") | dict.fromkeys(SAGA_CHECKPOINT_RETIRED)
    assert SagaCheckpoint.model_validate(old) == full_checkpoint()
    # Unknown fields are still refused: only the retired ones are dropped.
    with pytest.raises(ValueError, match="not_a_field"):
        SagaCheckpoint.model_validate(old | {"not_a_field": 1})


def test_workflow_modules_stay_small():
    """No file in `workflows/` over 500 lines, no function or method over 60."""
    for path in sorted(WORKFLOWS.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None
                assert node.end_lineno - start + 1 <= 60, f"{path.name}: {node.name}"
