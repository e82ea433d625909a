"""Approve or reject the review a run is waiting for.

    python examples/review.py WORKFLOW_ID approve [--comment "looks fine"]
    python examples/review.py WORKFLOW_ID reject --reason "too expensive"

The decision goes through the run's `review` update: the run checks it (a review
must be pending, the run must not have ended) and answers with what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from agentkeel.starters.client import Keel, KeelError


async def main(args: argparse.Namespace) -> int:
    async with Keel() as keel:
        run = await keel.get(args.workflow_id)
        review = await run.pending_review()
        if review is None:
            print(f"{run.workflow_id} is not waiting for a review", file=sys.stderr)
            return 1
        print(f"review {review.request_id}: {review.tool or review.kind} {review.arguments}")
        if review.reasoning:
            print(f"agent {review.agent} says: {review.reasoning}")

        # Passing the request id makes sure we decide the review we just looked at.
        if args.decision == "approve":
            outcome = await run.approve(
                reviewer=args.reviewer, comment=args.comment, request_id=review.request_id
            )
        else:
            outcome = await run.reject(
                reviewer=args.reviewer, reason=args.reason, request_id=review.request_id
            )
        print(f"{outcome.decision}: {outcome.message} (run is now {outcome.status.value})")
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow_id")
    parser.add_argument("decision", choices=["approve", "reject"])
    parser.add_argument("--reviewer", default=getpass.getuser())
    parser.add_argument("--comment", help="why you approve")
    parser.add_argument("--reason", default="rejected from examples/review.py", help="why you reject")
    try:
        code = asyncio.run(main(parser.parse_args()))
    except (KeelError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    # Leave with os._exit: a process that used a Temporal client can abort at exit (sdk-python #300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
