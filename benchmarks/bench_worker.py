"""A benchmark worker process: the platform's worker or the bare-SDK worker, until SIGTERM.

    python -m benchmarks.bench_worker --address HOST:PORT --task-queue Q --kind saga|bare \
        [--llm-host H --llm-port P --home DIR] [--app MODULE[:ATTR] ...]

Each kind runs in its own process so its memory can be read from
`/proc/<pid>/status` and its CPU does not mix with the process that starts
and times the runs. Both use the same concurrency limits and shutdown grace
(the platform's defaults from `Settings`). It prints `ready` once polling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from agentkeel.settings import Settings
from benchmarks.bench_bare import BARE_ACTIVITIES, BareWorkflow

READY = "ready"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--kind", choices=["saga", "stub", "bare"], required=True)
    parser.add_argument("--llm-host", default="127.0.0.1")
    parser.add_argument("--llm-port", type=int, default=8900)
    parser.add_argument("--home", type=Path, default=Path(".keel/bench"))
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--app", action="append", default=[], help="also register this app (saga kinds), as keel worker --app"
    )
    return parser.parse_args(argv)


async def _build(args: argparse.Namespace, settings: Settings) -> tuple[Worker, list[object]]:
    """The worker to run, and the activity set to close after it (saga only)."""
    if args.kind == "bare":
        # The bare SDK as a user would write it: default converter, default sandbox.
        client = await Client.connect(args.address)
        worker = Worker(
            client,
            task_queue=args.task_queue,
            workflows=[BareWorkflow],
            activities=BARE_ACTIVITIES,
            max_concurrent_activities=settings.max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        )
        return worker, []
    from agentkeel.logs import configure_logging
    from agentkeel.temporal import connect
    from agentkeel.workers.worker import build_worker
    from benchmarks.bench_teams import bench_noop

    # The platform's worker logs like `keel worker` does (JSON lines to stderr, which the
    # benchmark sends to a file): what users run is what is measured.
    configure_logging("json", args.log_level)
    client = await connect(address=args.address)
    doubles = [bench_noop]
    if args.kind == "stub":
        # Diagnostic: the saga with call_llm answered in process (no HTTP, no provider), which
        # splits the platform's cost between the workflow side and the LLM activity. Activities
        # given to the worker win over the plugin's of the same name.
        from benchmarks.bench_teams import stub_call_llm

        doubles.append(stub_call_llm)
    apps = [*settings.apps, *args.app] if args.app else None
    return build_worker(client, settings, args.task_queue, apps=apps, activities=doubles), []


async def _main(args: argparse.Namespace) -> int:
    settings = Settings(
        home=args.home, task_queue=args.task_queue, llm_host=args.llm_host, llm_port=args.llm_port
    )
    worker, closers = await _build(args, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # let the pollers start before saying so
    print(READY, flush=True)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()
        return 1
    await worker.shutdown()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    for closer in closers:
        await closer.aclose()  # type: ignore[attr-defined]
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the worker; leaves through `os._exit` (a process that used a Temporal client may abort at exit)."""
    code = asyncio.run(_main(_parse(argv)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
