"""The platform's worker: every workflow and activity on one task queue, run until SIGTERM/SIGINT.

    keel worker [--task-queue Q] [--metrics HOST:PORT]

The connection comes from Temporal's env config (`agentkeel.temporal.connect`).
Workflows run in Temporal's sandbox with the heavy deterministic modules
(pydantic, the platform's own `agentkeel` package) passed through, which keeps
the sandbox's safety and saves most of its per-workflow import cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from agentkeel.activities.registry import ActivitySet, build_activities
from agentkeel.workers import metrics
from agentkeel.workers.interceptors import ContextInterceptor
from agentkeel.workflows.registry import ALL_WORKFLOWS
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agentkeel.logs import get_logger
from agentkeel.settings import Settings
from agentkeel.temporal import connect

GRACEFUL_SHUTDOWN_TIMEOUT = timedelta(seconds=15)
"""On SIGTERM, running activities get this long to finish before they are cancelled."""

PASSTHROUGH_MODULES: tuple[str, ...] = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "structlog",
    "yaml",
    "jsonschema",
    "cryptography",
    # The platform's deterministic, side-effect-free core: contracts and names. Not `agentkeel`
    # as a whole: the workflows' own modules (`agentkeel.workflows.*`) run inside the sandbox.
    "agentkeel.contracts",
    "agentkeel.errors",
    "agentkeel.names",
    "agentkeel.schemas",
    "agentkeel.search_attributes",
    "agentkeel.signing",
)
"""Deterministic modules imported once, outside the sandbox, instead of once per workflow run."""

log = get_logger(__name__)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandboxed runner with the platform's pass-through modules."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def build_worker(
    client: Client,
    settings: Settings,
    task_queue: str | None = None,
    activity_set: ActivitySet | None = None,
    *,
    workflows: Sequence[type] | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """A worker registering every workflow and activity of the platform.

    Args:
        client: A connected client (see `agentkeel.temporal.connect`).
        settings: Process settings (task queue, concurrency limits).
        task_queue: Overrides `settings.task_queue`.
        activity_set: The activities to register; default `build_activities(settings)`. Pass your own
            to close it (`await activity_set.aclose()`) after the worker stops.
        workflows: Overrides `agentkeel.workflows.registry.ALL_WORKFLOWS` (tests).
        interceptors: Extra worker interceptors, after the log-context one.
    """
    activity_set = activity_set if activity_set is not None else build_activities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(ALL_WORKFLOWS if workflows is None else workflows),
        activities=list(activity_set.activities),
        interceptors=[ContextInterceptor(), *interceptors],
        workflow_runner=workflow_runner(),
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT,
    )


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """Run the platform's worker in this process for the duration of a `with` block.

    For scripts, tests and `keel demo`: the activities are built from `settings` and closed
    (HTTP pools, ledger) after the worker has stopped.

    Args:
        client: A connected client (see `agentkeel.temporal.connect`).
        settings: Process settings.
        task_queue: Overrides `settings.task_queue`.
    """
    activity_set = build_activities(settings)
    try:
        async with build_worker(client, settings, task_queue, activity_set) as worker:
            yield worker
    finally:
        await activity_set.aclose()


async def run_worker(
    settings: Settings,
    task_queue: str | None = None,
    metrics_bind: str | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Connect, run the platform's worker until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully.

    Args:
        settings: Process settings.
        task_queue: Overrides `settings.task_queue`.
        metrics_bind: `HOST:PORT` to serve Prometheus metrics on (`/metrics`).
        stop: Set it to stop the worker (tests); signals set it too.

    Raises:
        agentkeel.temporal.TemporalUnavailable: the server cannot be reached.
        agentkeel.workers.metrics.MetricsBindError: the metrics address is invalid or taken.
    """
    runtime = metrics.build_runtime(metrics_bind) if metrics_bind else None
    client = await connect(runtime=runtime)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    activity_set = build_activities(settings)
    try:
        queue = task_queue or settings.task_queue
        worker = build_worker(client, settings, queue, activity_set)
        log.info(
            "worker started",
            address=client.service_client.config.target_host,
            namespace=client.namespace,
            task_queue=queue,
            workflows=len(ALL_WORKFLOWS),
            activities=len(activity_set.activities),
            metrics=f"http://{metrics_bind}/metrics" if metrics_bind else None,
        )
        run_task = asyncio.create_task(worker.run(), name="keel-worker")
        stop_task = asyncio.create_task(stop.wait(), name="keel-worker-stop")
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done:
            stop_task.cancel()
            run_task.result()  # the worker failed on its own: raise its error
            return
        log.info("worker stopping", grace_s=GRACEFUL_SHUTDOWN_TIMEOUT.total_seconds())
        await worker.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
        log.info("worker stopped")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await activity_set.aclose()
