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
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from agentkeel.logs import get_logger
from agentkeel.settings import Settings
from agentkeel.temporal import connect
from agentkeel.workers import metrics

if TYPE_CHECKING:
    from agentkeel.app import App

GRACEFUL_SHUTDOWN_TIMEOUT = timedelta(seconds=15)
"""On SIGTERM, running activities get this long to finish before they are cancelled."""

log = get_logger(__name__)


def build_worker(
    client: Client,
    settings: Settings,
    task_queue: str | None = None,
    *,
    apps: Sequence[App | str] | None = None,
    activities: Sequence[Callable[..., Any]] = (),
    workflows: Sequence[type] = (),
    interceptors: Sequence[Interceptor] = (),
    platform_activities: bool = True,
) -> Worker:
    """A worker configured by `AgentkeelPlugin`: the platform's workflows and activities plus the apps'.

    Args:
        client: A connected client (see `agentkeel.temporal.connect`).
        settings: Process settings (task queue, concurrency limits, apps).
        task_queue: Overrides `settings.task_queue`.
        apps: Apps to register; default `settings.apps`.
        activities: Activities registered before the plugin's; one with the same name as a
            platform activity replaces it (test doubles).
        workflows: More workflows (the platform's are always registered).
        interceptors: Extra worker interceptors.
        platform_activities: Register `call_llm` and `resolve_team`.
    """
    from agentkeel.plugin import AgentkeelPlugin  # the plugin builds on this module's runner

    plugin = AgentkeelPlugin(settings=settings, apps=apps, platform_activities=platform_activities)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(workflows),
        activities=list(activities),
        interceptors=list(interceptors),
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT,
        plugins=[plugin],
    )


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    task_queue: str | None = None,
    *,
    apps: Sequence[App | str] | None = None,
) -> AsyncIterator[Worker]:
    """Run the platform's worker in this process for the duration of a `with` block.

    For scripts, tests and `keel demo`: the activities are opened by the plugin and closed
    (HTTP pools, the apps' databases) after the worker has stopped.

    Args:
        client: A connected client (see `agentkeel.temporal.connect`).
        settings: Process settings.
        task_queue: Overrides `settings.task_queue`.
        apps: Apps to register; default `settings.apps`.
    """
    async with build_worker(client, settings, task_queue, apps=apps) as worker:
        yield worker


async def run_worker(
    settings: Settings,
    task_queue: str | None = None,
    metrics_bind: str | None = None,
    *,
    stop: asyncio.Event | None = None,
    apps: Sequence[App | str] | None = None,
) -> None:
    """Connect, run the platform's worker until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully.

    Args:
        settings: Process settings.
        task_queue: Overrides `settings.task_queue`.
        metrics_bind: `HOST:PORT` to serve Prometheus metrics on (`/metrics`).
        stop: Set it to stop the worker (tests); signals set it too.
        apps: Apps to register; default `settings.apps`.

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

    try:
        queue = task_queue or settings.task_queue
        worker = build_worker(client, settings, queue, apps=apps)
        config = worker.config(active_config=True)
        log.info(
            "worker started",
            address=client.service_client.config.target_host,
            namespace=client.namespace,
            task_queue=queue,
            workflows=len(config.get("workflows") or []),
            activities=len(config.get("activities") or []),
            apps=[getattr(app, "name", app) for app in (settings.apps if apps is None else apps)],
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
