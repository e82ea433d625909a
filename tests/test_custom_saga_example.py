"""The README's `Saga` example (examples/custom_saga.py) works as documented."""

from __future__ import annotations

import uuid

import pytest
from temporalio.worker import Worker

from agentkeel.examples.travel.ledger import Ledger
from agentkeel.examples.travel.tools import TravelTools
from examples import custom_saga as example

pytestmark = pytest.mark.unit


async def test_custom_saga_books_then_compensates_in_reverse(time_env, task_queue, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    tools = TravelTools(ledger)
    client = time_env.client
    async with Worker(
        client, task_queue=task_queue, workflows=[example.TripWorkflow], activities=tools.activities()
    ):
        ok_id, bad_id = f"trip-{uuid.uuid4().hex[:8]}", f"trip-{uuid.uuid4().hex[:8]}"
        ok = await client.execute_workflow(example.TripWorkflow.run, 950.0, id=ok_id, task_queue=task_queue)
        bad = await client.execute_workflow(example.TripWorkflow.run, -1.0, id=bad_id, task_queue=task_queue)
    assert ok == "booked"
    assert [e.action for e in ledger.entries(ok_id)] == ["book_flight", "book_hotel", "charge_card"]
    # charge_card refused its arguments (non-retryable): nothing was charged, so refund_card did nothing,
    # then the hotel and the flight were undone, newest first.
    assert bad == "compensated: refund_card, cancel_hotel, cancel_flight"
    assert [e.action for e in ledger.entries(bad_id)] == [
        "book_flight",
        "book_hotel",
        "cancel_hotel",
        "cancel_flight",
    ]
    ledger.close()
