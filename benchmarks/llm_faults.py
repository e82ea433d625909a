"""Fault benchmark of `call_llm`: 50 calls through a real worker while the provider fails a lot.

    .venv/bin/python -m benchmarks.llm_faults [--calls 50] [--error-500 0.2] [--error-429 0.1] [--seed 1]

Starts its own in-memory Temporal dev server and an offline provider that
answers 20% of requests with 500 and 10% with 429 (`Retry-After: 1`), runs one
tiny workflow per call (each executes `call_llm` with the platform's retry
policy and timeouts), checks that every call succeeded and prints, per call,
the attempts it took, the provider that served it and its time, then totals.

The alias chain has two providers on the same offline server
(`primary:scripted`, `backup:scripted`): a 500 from the primary falls over to
the backup within the same attempt, as in production; a 429 waits for
`Retry-After` through Temporal's retry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from agentkeel.activities.breakers import BreakerRegistry
    from agentkeel.activities.llm import LLMActivities
    from agentkeel.activities.llm_config import LLMConfig
    from agentkeel.contracts import ChatMessage, LLMRequest, LLMResult
    from agentkeel.names import CALL_LLM_ACTIVITY
    from agentkeel.settings import Settings
    from agentkeel.workflows.policies import LLM_HEARTBEAT, LLM_RETRY, LLM_START_TO_CLOSE

BENCH_WORKFLOW = "BenchLLMFaultsWorkflow"
CALLS = 50
ERROR_500 = 0.2
ERROR_429 = 0.1
RETRY_AFTER_S = 1.0


@workflow.defn(name=BENCH_WORKFLOW)
class LLMFaultsWorkflow:
    """One `call_llm`, with the platform's retry policy and timeouts."""

    @workflow.run
    async def run(self, request: LLMRequest) -> LLMResult:
        """Returns the activity's result."""
        return await workflow.execute_activity(
            CALL_LLM_ACTIVITY,
            request,
            result_type=LLMResult,
            start_to_close_timeout=LLM_START_TO_CLOSE,
            heartbeat_timeout=LLM_HEARTBEAT,
            retry_policy=LLM_RETRY,
        )


@dataclass
class CallReport:
    """One call: its index, attempts, time, and who served it (or why it failed)."""

    index: int
    seconds: float
    attempts: int = 0
    provider: str = ""
    error: str | None = None


@dataclass
class Report:
    """Every call of a run."""

    calls: list[CallReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def succeeded(self) -> int:
        """Calls that returned a result."""
        return sum(1 for c in self.calls if c.error is None)

    def lines(self) -> list[str]:
        """The per-call table and the totals, for printing."""
        out = [f"{'call':>4}  {'attempts':>8}  {'seconds':>7}  provider"]
        for c in self.calls:
            out.append(
                f"{c.index:>4}  {c.attempts:>8}  {c.seconds:>7.2f}  {c.provider or 'FAILED: ' + str(c.error)}"
            )
        times = [c.seconds for c in self.calls]
        attempts = [c.attempts for c in self.calls if c.error is None]
        out.append(
            f"{self.succeeded}/{len(self.calls)} succeeded in {self.seconds:.2f}s; "
            f"attempts total {sum(attempts)}, max {max(attempts, default=0)}; "
            f"retried calls {sum(1 for a in attempts if a > 1)}; "
            f"served by backup {sum(1 for c in self.calls if c.provider == 'backup')}; "
            f"time p50 {statistics.median(times):.2f}s, max {max(times):.2f}s"
        )
        return out


def bench_config(base_url: str) -> LLMConfig:
    """Two providers on the same offline server; breakers tolerant enough for 20% random 500s."""
    provider = {"base_url": base_url, "fail_max": 10, "reset_timeout_s": 2.0, "timeout_s": 30}
    raw = {
        "providers": {"primary": provider, "backup": provider},
        "models": {"default": {"chain": ["primary:scripted", "backup:scripted"]}},
    }
    return LLMConfig.from_dict(raw, Settings(), env={})


async def run_fault_benchmark(client: Client, task_queue: str, base_url: str, calls: int = CALLS) -> Report:
    """Run `calls` concurrent one-activity workflows through a worker of this process.

    Args:
        client: Connected client (pydantic data converter).
        task_queue: A queue no other worker polls.
        base_url: The offline provider's base URL; inject its faults before calling.
        calls: How many calls.
    """
    acts = LLMActivities(bench_config(base_url), BreakerRegistry())
    report = Report()
    run_id = uuid.uuid4().hex[:8]

    async def one(index: int) -> CallReport:
        request = LLMRequest(
            messages=[ChatMessage(role="user", content=f"benchmark call {index}")],
            correlation_id=f"bench-{run_id}-{index}",
            idempotency_key=f"bench-{run_id}-{index}:1",
            agent="bench",
        )
        started = time.monotonic()
        try:
            result = await client.execute_workflow(
                LLMFaultsWorkflow.run, request, id=f"bench-llm-{run_id}-{index}", task_queue=task_queue
            )
        except WorkflowFailureError as exc:
            cause = exc.cause.cause if exc.cause is not None and exc.cause.cause is not None else exc.cause
            return CallReport(index, time.monotonic() - started, error=str(cause))
        return CallReport(index, time.monotonic() - started, result.attempt, result.provider)

    try:
        async with Worker(
            client, task_queue=task_queue, workflows=[LLMFaultsWorkflow], activities=[acts.call_llm]
        ):
            started = time.monotonic()
            report.calls = list(await asyncio.gather(*(one(i) for i in range(calls))))
            report.seconds = time.monotonic() - started
    finally:
        await acts.aclose()
    return report


async def _main(args: argparse.Namespace) -> int:
    from agentkeel.dev.devserver import DevServer
    from agentkeel.dev.offline.server import OfflineProvider
    from agentkeel.temporal import connect

    faults = {"error_rates": {500: args.error_500, 429: args.error_429}, "retry_after_s": RETRY_AFTER_S}
    faults["seed"] = args.seed
    server = DevServer(db_path=None, headless=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await server.start()
    try:
        async with OfflineProvider(port=0, faults=faults) as provider:
            client = await connect(address=server.address, namespace="default")
            print(
                f"dev server {server.address}; offline provider {provider.base_url} with "
                f"{args.error_500:.0%} 500s and {args.error_429:.0%} 429s (Retry-After {RETRY_AFTER_S:g}s)"
            )
            report = await run_fault_benchmark(
                client, f"bench-llm-{uuid.uuid4().hex[:8]}", provider.base_url, args.calls
            )
            journal = await provider.journal()
    finally:
        await server.stop()
    for line in report.lines():
        print(line)
    statuses = [e["status"] for e in journal]
    print(
        f"provider saw {len(journal)} requests: {statuses.count(200)} ok, "
        f"{statuses.count(500)} x 500, {statuses.count(429)} x 429"
    )
    ok = report.succeeded == len(report.calls)
    print("PASS: every call succeeded" if ok else "FAIL: some calls failed")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse flags, run, leave with the exit code (os._exit: see DESIGN.md)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.llm_faults", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--error-500", type=float, default=ERROR_500)
    parser.add_argument("--error-429", type=float, default=ERROR_429)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from agentkeel.logs import configure_logging

    configure_logging(level="ERROR")  # the injected faults log a warning each
    code = asyncio.run(_main(args))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
