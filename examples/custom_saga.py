"""Your own workflow with the `Saga` helper: book a flight and a hotel, undo both if the charge fails.

Run it against a local stack (`keel dev` in another terminal):

    python examples/custom_saga.py

The worker below registers this workflow next to the platform's travel tools;
in your project you would add it to your own worker.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import CompensationRequest, ToolRequest, ToolResult
    from agentkeel.workflows.saga import Saga

STEP_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class TripWorkflow:
    """Books a trip as a saga: each booking registers its compensation before it runs."""

    @workflow.run
    async def run(self, amount_usd: float) -> str:
        saga = Saga()
        wid = workflow.info().workflow_id
        steps = [
            (
                "book_flight",
                "cancel_flight",
                {"origin": "Paris", "destination": "Lisbon", "date": "2026-12-10"},
            ),
            ("book_hotel", "cancel_hotel", {"city": "Lisbon", "check_in": "2026-12-10", "nights": 3}),
            ("charge_card", "refund_card", {"amount_usd": amount_usd, "description": "trip"}),
        ]
        try:
            for step, (tool, undo, args) in enumerate(steps, start=1):
                key = f"{wid}:{step}"
                # Register first: the compensation undoes by key, and does nothing if the tool never ran.
                saga.add(
                    tool,
                    undo,
                    CompensationRequest(idempotency_key=key, correlation_id=wid, tool=tool, arguments=args),
                    step=step,
                )
                await workflow.execute_activity(
                    tool,
                    ToolRequest(
                        arguments=args, idempotency_key=key, correlation_id=wid, workflow_id=wid, step=step
                    ),
                    result_type=ToolResult,
                    start_to_close_timeout=STEP_TIMEOUT,
                )
            return "booked"
        except ActivityError:
            outcome = await saga.compensate()
            undone = ", ".join(r.compensation for r in outcome.records)
            return f"compensated: {undone}" if outcome.ok else f"left behind: {outcome.uncompensated}"


async def main() -> None:
    from agentkeel.settings import load_settings
    from agentkeel.temporal import connect
    from agentkeel.workers.worker import build_worker

    settings = load_settings()
    client = await connect()
    queue = f"custom-saga-{uuid.uuid4().hex[:6]}"
    # The travel example's tools, registered by the plugin like any app's, next to this workflow.
    async with build_worker(
        client, settings, queue, apps=["agentkeel.examples.travel"], workflows=[TripWorkflow]
    ):
        ok = await client.execute_workflow(
            TripWorkflow.run, 950.0, id=f"trip-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        print("amount 950:", ok)
        # A negative amount makes charge_card refuse: the hotel and the flight are undone, newest first.
        bad = await client.execute_workflow(
            TripWorkflow.run, -1.0, id=f"trip-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        print("amount -1:", bad)


if __name__ == "__main__":
    asyncio.run(main())
