"""The `travel` example end to end: real dev server, real worker, offline provider over HTTP, stock CLI.

Set `KEEL_RECORD_HISTORIES=1` to rewrite the checked-in histories in `tests/histories/`
from these runs (do it when the workflow changes on purpose, with a `workflow.patched` guard).
Keep the histories of earlier workflow versions under a `vN_` prefix: `v1_*` were recorded
before the `coalesce-search-attributes` patch, `v2_*` before `execution-scoped-keys` and
`failed-outcomes` (a rejected run completed), `v3_*` before `conversation-store` (the whole
conversation in every `call_llm` input); replaying them checks that runs started by older
workers still finish on this code. `long_*` are two runs of a 1,000-turn continue-as-new chain
(`tests/test_long_conversation.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError
from temporalio.worker import Replayer

from agentkeel import search_attributes as sa
from agentkeel.contracts import ReviewInput, ReviewOutcome, SagaRequest, SagaResult, SagaStatusView
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.names import AGENT_SAGA_WORKFLOW
from agentkeel.outcomes import saga_result
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import StoreSettings
from agentkeel.store import open_store
from agentkeel.workers.worker import running_worker

pytestmark = pytest.mark.integration

HISTORY_DIR = Path(__file__).parent / "histories"
TEMPORAL = str(Path(sys.executable).parent / "temporal")
RECORDED: list[Any] = []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def travel_settings(request, worker_settings, offline_llm, task_queue):
    """The worker's settings, once with the embedded SQLite store and once with PostgreSQL."""
    store = worker_settings.store
    if request.param == "postgres":
        store = StoreSettings(url=request.getfixturevalue("postgres_url"))
    return worker_settings.model_copy(
        update={
            "llm_port": offline_llm.port,
            "llm_host": "127.0.0.1",
            "task_queue": task_queue,
            "store": store,
        }
    )


async def _start(client, task_queue: str, goal: str = "Trip to Lisbon, Dec 10, 3 nights") -> WorkflowHandle:
    return await client.start_workflow(
        AGENT_SAGA_WORKFLOW,
        SagaRequest(goal=goal, team_name="travel"),
        id=f"keel-travel-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=SagaResult,
        static_summary=f"travel: {goal}",
    )


async def _wait_status(handle: WorkflowHandle, status: SagaStatus, within: float = 30) -> SagaStatusView:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        view = await handle.query("status", result_type=SagaStatusView)
        if view.status == status:
            return view
        assert not view.status.is_final, f"run ended {view.status}: {view.last_error}"
        assert asyncio.get_running_loop().time() < deadline, f"still {view.status}"
        await asyncio.sleep(0.1)


def _cli(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TEMPORAL, *args, "--address", address], capture_output=True, text=True, timeout=30, check=False
    )


async def _record(handle: WorkflowHandle, name: str) -> None:
    history = await handle.fetch_history()
    RECORDED.append(history)
    if os.environ.get("KEEL_RECORD_HISTORIES"):
        HISTORY_DIR.mkdir(exist_ok=True)
        (HISTORY_DIR / f"{name}.json").write_text(history.to_json())


async def test_travel_approved_with_the_stock_cli(dev_server, travel_settings, task_queue):
    client = dev_server.client
    async with running_worker(client, travel_settings, task_queue):
        handle = await _start(client, task_queue)
        view = await _wait_status(handle, SagaStatus.AWAITING_REVIEW)
        assert view.pending_review.tool == "charge_card"
        assert view.tokens > 0 and view.cost_usd > 0
        # Visible to the stock CLI through the search attribute (visibility is eventually consistent).
        for _ in range(50):
            listed = _cli(
                "workflow",
                "list",
                "--query",
                'KeelStatus="AwaitingReview"',
                "-o",
                "json",
                address=dev_server.address,
            )
            if handle.id in listed.stdout:
                break
            await asyncio.sleep(0.2)
        assert handle.id in listed.stdout, listed.stderr
        signalled = _cli(
            "workflow",
            "signal",
            "--workflow-id",
            handle.id,
            "--name",
            "approve",
            "--input",
            '{"reviewer": "ana"}',
            address=dev_server.address,
        )
        assert signalled.returncode == 0, signalled.stderr
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPLETED, result.reason
        assert result.reviews[0].reviewer == "ana"
        ledger = Ledger(travel_settings.ledger)
        actions = [e.action for e in ledger.entries(handle.id)]
        ledger.close()
        assert actions == ["book_flight", "book_hotel", "charge_card"]
        # The conversation went to the configured store (SQLite or PostgreSQL), owned by the run.
        async with open_store(travel_settings) as store:
            assert handle.id in await store.owners()
        desc = await handle.describe()
        assert await desc.static_summary() == "travel: Trip to Lisbon, Dec 10, 3 nights"
        attrs = desc.typed_search_attributes
        assert attrs.get(sa.KEEL_STATUS) == "Completed" and attrs.get(sa.KEEL_TEAM) == "travel"
        assert attrs.get(sa.KEEL_TOKENS) == result.tokens > 0
        assert attrs.get(sa.KEEL_COST_USD) == pytest.approx(result.cost_usd)
        assert attrs.get(sa.KEEL_AGENT) == result.final_agent
        # Changes are written at most once per workflow task, never one event per change.
        history = await handle.fetch_history()
        per_task: dict[int, int] = {}
        task = 0
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                task = event.event_id
            elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
                fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
                if "TemporalChangeVersion" not in fields.indexed_fields:  # the SDK's patch marker
                    per_task[task] = per_task.get(task, 0) + 1
        assert per_task and max(per_task.values()) == 1, per_task
        await _record(handle, "travel_approved")
        # An update to a finished run gets a clear error, not a hang.
        with pytest.raises((RPCError, WorkflowUpdateRPCTimeoutOrCancelledError)):
            await handle.execute_update("review", ReviewInput(reviewer="ana", decision="approve"))


async def test_travel_rejected_compensates_in_reverse(dev_server, travel_settings, task_queue):
    client = dev_server.client
    async with running_worker(client, travel_settings, task_queue):
        handle = await _start(client, task_queue)
        await _wait_status(handle, SagaStatus.AWAITING_REVIEW)
        outcome = await handle.execute_update(
            "review",
            ReviewInput(decision="reject", reviewer="ana", comment="over budget"),
            result_type=ReviewOutcome,
        )
        assert outcome.status == SagaStatus.COMPENSATING
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPENSATED
        assert [c.compensation for c in result.compensations] == ["cancel_hotel", "cancel_flight"]
        ledger = Ledger(travel_settings.ledger)
        entries = ledger.entries(handle.id)
        ledger.close()
        assert [e.action for e in entries] == ["book_flight", "book_hotel", "cancel_hotel", "cancel_flight"]
        assert entries[2].reverses == entries[1].idempotency_key
        assert entries[3].reverses == entries[0].idempotency_key
        await _record(handle, "travel_rejected")


async def test_replay_integration_histories():
    assert RECORDED, "the integration tests above record their histories"
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for history in RECORDED:
        await replayer.replay_workflow(history)


@pytest.mark.unit
async def test_replay_checked_in_histories():
    files = sorted(HISTORY_DIR.glob("*.json"))
    assert {f.stem for f in files} >= {
        "travel_approved",
        "travel_rejected",
        "v1_travel_approved",
        "v1_travel_rejected",
        "v2_travel_approved",
        "v2_travel_rejected",
        "v3_travel_approved",
        "v3_travel_rejected",
        "long_continued_run",
        "long_last_run",
    }
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for path in files:
        from temporalio.client import WorkflowHistory

        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        await replayer.replay_workflow(history)
