"""Start a run of the `travel` team and wait for its result.

    python examples/start_and_wait.py "Trip to Lisbon, Dec 10, 3 nights"

The run stops for a person before charging the card. Decide from another
terminal with `keel approve ID`, `keel reject ID --reason ...`, or
`python examples/review.py ID approve`.

The Temporal connection comes from Temporal's env config (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, profiles); a worker must be running
(`keel worker`, or `keel dev` for the whole local stack).
"""

from __future__ import annotations

import asyncio
import os
import sys

from agentkeel.starters.client import Keel, KeelError


async def main(goal: str) -> int:
    async with Keel() as keel:
        run = await keel.start("travel", goal, metadata={"source": "examples/start_and_wait.py"})
        print(f"started {run.workflow_id}")
        print(f"watch it in the Temporal UI: {run.ui_url}")

        # Say once what the run waits for, so whoever runs this knows what to do.
        async for view in run.watch():
            if view.pending_review is not None:
                review = view.pending_review
                print(f"waiting for a review of {review.tool or review.kind} {review.arguments}")
                print(f"  approve: keel approve {run.workflow_id}")
                print(f"  reject:  keel reject {run.workflow_id} --reason 'too expensive'")
                break

        result = await run.result()
        print(f"status: {result.status.value}")
        if result.reason:
            print(f"reason: {result.reason}")
        if result.output:
            print(f"output: {result.output}")
        print(f"steps: {len(result.steps)}, tokens: {result.tokens}, cost: ${result.cost_usd:.4f}")
        for comp in result.compensations:
            print(f"compensated: {comp.compensation} for {comp.name} ({comp.status})")
        return 0 if result.status.value == "Completed" else 1


if __name__ == "__main__":
    goal = " ".join(sys.argv[1:]) or "Trip to Lisbon, Dec 10, 3 nights"
    try:
        code = asyncio.run(main(goal))
    except (KeelError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    # A process that used a Temporal client can abort at interpreter exit (sdk-python #300):
    # flush and leave with os._exit so the exit code is the one we chose.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
