"""Every decision has an owner: reviewers are required, may be limited by name, and may have to sign."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError

from agentkeel import errors
from agentkeel.contracts import ReviewInput, ReviewOutcome, SagaStatusView, TranscriptEntry
from agentkeel.outcomes import saga_result
from agentkeel.search_attributes import SagaStatus
from agentkeel.signing import decision_message, generate_key_pair, load_private_key, sign, write_key_pair
from agentkeel.starters.reviewer import resolve_reviewer
from tests.saga_doubles import TRAVEL_SCRIPT, ScriptedLLM, saga_worker, start_saga, travel_with_review

pytestmark = pytest.mark.unit


@pytest.fixture
async def client(time_env: Any) -> Client:
    return time_env.client


async def status_of(handle: WorkflowHandle) -> SagaStatusView:
    return await handle.query("status", result_type=SagaStatusView)


async def pending_id(handle: WorkflowHandle, within: float = 20) -> str:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        view = await status_of(handle)
        if view.pending_review is not None:
            return view.pending_review.request_id
        assert not view.status.is_final, view.last_error
        await asyncio.sleep(0.05)
    raise AssertionError("no review requested in time")


async def decide(handle: WorkflowHandle, **fields: Any) -> ReviewOutcome:
    return await handle.execute_update("review", ReviewInput(**fields), result_type=ReviewOutcome)


# --------------------------------------------------------------------------- no anonymous decisions


@pytest.mark.parametrize("payload", [None, {}, {"reviewer": ""}, {"reviewer": "   "}, {"comment": "ok"}])
async def test_a_signal_without_a_reviewer_is_refused_and_recorded(client, task_queue, tmp_path, payload):
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db") as ledger:
        handle = await start_saga(client, task_queue)
        await pending_id(handle)
        if payload is None:
            await handle.signal("approve")  # what `temporal workflow signal --name approve` sends
        else:
            await handle.signal("approve", payload)
        view = await status_of(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW
        assert [s.name for s in view.rejected_signals] == ["approve"]
        assert "non-empty reviewer" in view.rejected_signals[0].error
        assert "charge_card" not in [e.action for e in ledger.entries(handle.id)]
        await handle.signal("reject", {"reviewer": "ana", "reason": "done testing"})
        assert (await saga_result(handle)).status == SagaStatus.COMPENSATED


async def test_an_update_without_a_reviewer_is_refused_by_the_validator(client, task_queue, tmp_path):
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db"):
        handle = await start_saga(client, task_queue)
        await pending_id(handle)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("review", {"decision": "approve"}, result_type=ReviewOutcome)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                "review", {"decision": "approve", "reviewer": " "}, result_type=ReviewOutcome
            )
        assert (await status_of(handle)).status == SagaStatus.AWAITING_REVIEW
        await decide(handle, decision="reject", reviewer="ana")
        await saga_result(handle)


def test_the_reviewer_comes_from_the_argument_then_the_environment_then_the_os_user(monkeypatch):
    monkeypatch.setenv("KEEL_REVIEWER", "ops-lead")
    assert (resolve_reviewer("ana").name, resolve_reviewer("ana").source) == ("ana", "argument")
    assert (resolve_reviewer().name, resolve_reviewer().source) == ("ops-lead", "KEEL_REVIEWER")
    monkeypatch.delenv("KEEL_REVIEWER")
    assert (resolve_reviewer().name, resolve_reviewer().source) == (getpass.getuser(), "OS user")
    with pytest.raises(ValueError):
        resolve_reviewer("  ")


# --------------------------------------------------------------------------- who may decide


async def test_only_listed_reviewers_may_decide(client, task_queue, tmp_path):
    team = travel_with_review(reviewers=["ana", "ops-*"])
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db") as ledger:
        handle = await start_saga(client, task_queue, team=team)
        rid = await pending_id(handle)
        outcome = await decide(handle, decision="approve", reviewer="mallory", request_id=rid)
        assert outcome.refused and "'mallory' may not decide" in outcome.message
        await handle.signal("approve", {"reviewer": "eve"})
        view = await status_of(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW
        refused = [(s.name, s.error) for s in view.rejected_signals]
        assert refused[0][0] == "review" and "mallory" in refused[0][1]
        assert refused[1][0] == "approve" and "'eve' may not decide" in refused[1][1]
        assert "charge_card" not in [e.action for e in ledger.entries(handle.id)]
        outcome = await decide(handle, decision="approve", reviewer="ops-7", request_id=rid)
        assert not outcome.refused
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPLETED
        assert result.reviews[0].reviewer == "ops-7"


# --------------------------------------------------------------------------- signed decisions


async def test_signed_review_accepts_only_a_signature_over_this_exact_decision(client, task_queue, tmp_path):
    key, public = generate_key_pair()
    other_key, _ = generate_key_pair()
    team = travel_with_review(reviewer_keys=[public])
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db") as ledger:
        handle = await start_saga(client, task_queue, team=team)
        rid = await pending_id(handle)
        edited = {"amount_usd": 900.0, "description": "discounted"}

        def signed(by: Any, *, request_id: str = rid, arguments: Any = edited, workflow_id: str = handle.id):
            message = decision_message(
                workflow_id=workflow_id,
                request_id=request_id,
                decision="edit",
                reviewer="ana",
                arguments=arguments,
            )
            return sign(by, message)

        attempts = {
            "unsigned": None,
            "wrong key": signed(other_key),
            "another request": signed(key, request_id="rv-1-00000000"),
            "other arguments": signed(key, arguments={"amount_usd": 1.0, "description": "x"}),
            "another run": signed(key, workflow_id="keel-travel-other"),
        }
        for label, signature in attempts.items():
            outcome = await decide(
                handle, decision="edit", reviewer="ana", request_id=rid, arguments=edited, signature=signature
            )
            assert outcome.refused, label
        # A stolen approval signature cannot be sent as a signal either.
        await handle.signal("approve", {"reviewer": "ana", "signature": attempts["wrong key"]})
        view = await status_of(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW
        assert len(view.rejected_signals) == len(attempts) + 1
        assert "signed decisions only" in view.rejected_signals[0].error
        assert "charge_card" not in [e.action for e in ledger.entries(handle.id)]

        outcome = await decide(
            handle, decision="edit", reviewer="ana", request_id=rid, arguments=edited, signature=signed(key)
        )
        assert not outcome.refused
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPLETED
        charged = [e for e in ledger.entries(handle.id) if e.action == "charge_card"]
        assert charged and charged[0].amount_usd == 900.0


def test_key_files_round_trip_and_are_never_overwritten(tmp_path: Path):
    path = tmp_path / "keys" / "ana.key"
    public = write_key_pair(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "ana.key.pub").read_text().strip() == public
    load_private_key(path)
    with pytest.raises(FileExistsError):
        write_key_pair(path)


# --------------------------------------------------------------------------- outcomes in Temporal


async def test_a_rejected_run_is_temporal_failed_with_its_result_in_the_error(client, task_queue, tmp_path):
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db"):
        handle = await start_saga(client, task_queue)
        await pending_id(handle)
        await decide(handle, decision="reject", reviewer="ana", comment="too dear")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        cause = failed.value.cause
        assert getattr(cause, "type", None) == errors.SAGA_COMPENSATED
        assert getattr(cause, "non_retryable", False)
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert [c.compensation for c in result.compensations] == ["cancel_hotel", "cancel_flight"]
        assert (await handle.describe()).status.name == "FAILED"


# --------------------------------------------------------------------------- what people see


async def test_the_ui_details_say_who_wants_what_and_the_timer_is_a_review_deadline(
    client, task_queue, tmp_path
):
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "l.db"):
        handle = await start_saga(client, task_queue)
        rid = await pending_id(handle)
        metadata = await handle.query("__temporal_workflow_metadata")
        details = metadata.current_details
        assert details.splitlines()[0] == "waiting for a reviewer: planner wants charge_card $1,123.50"
        await decide(
            handle,
            decision="edit",
            reviewer="ana",
            request_id=rid,
            arguments={"amount_usd": 900.0, "description": "discounted"},
        )
        await saga_result(handle)
        history = await handle.fetch_history()
        timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        converter = client.data_converter.payload_converter
        summaries = [converter.from_payload(e.user_metadata.summary, str) for e in timers]
        assert "review deadline" in summaries
        transcript = await handle.query("transcript", result_type=list[TranscriptEntry])
        decision = next(e for e in transcript if e.kind == "decision")
        assert decision.data["arguments"] == {"amount_usd": 900.0, "description": "discounted"}
