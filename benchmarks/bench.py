"""`make bench`: what agentkeel costs on top of Temporal, each figure beside its baseline, in one run.

    python -m benchmarks.bench [--quick] [--only steps,throughput,...] [--keep]

It starts its own stack (a dev server with `keel server`'s settings, the
offline provider as its own process, one worker process per kind), runs each
measurement on the platform and on a bare-SDK baseline on the same server,
prints a table and writes `benchmarks/results/bench-<timestamp>.json` with the
machine's description. Every figure is the median of at least 3 repetitions,
with min and max.

Shapes (also written to the JSON):

* saga of N LLM steps: a chain of N agents, each making one LLM call and
  handing off to the next (a handoff runs no activity), so the saga runs
  exactly N `call_llm` activities against the offline provider;
* bare workflow of N steps: N no-op activities in a row (`bench_bare.py`);
* long conversation: one agent calling the no-op tool `bench_noop` each turn;
* `--only long` (`bench_long.py`): one agent whose tool returns 2 KB of random text per
  call, for 10, 100 and 1,000 tool turns, on its own fresh server, beside the newest
  `results/long-baseline-*.json` (issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client

from agentkeel.contracts import SagaResult, TeamSpec
from agentkeel.logs import configure_logging
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters.client import Keel
from agentkeel.temporal import connect
from benchmarks.bench_bare import BARE_WORKFLOW
from benchmarks.bench_history import history_turns
from benchmarks.bench_long import QUICK_TURNS as LONG_QUICK_TURNS
from benchmarks.bench_long import SHAPE as LONG_SHAPE
from benchmarks.bench_long import TURNS as LONG_TURNS
from benchmarks.bench_long import run_long
from benchmarks.bench_long_report import long_table
from benchmarks.bench_stack import (
    Provider,
    cpu_seconds,
    keel_server,
    machine,
    memory_of,
    plain_server,
    workers,
)
from benchmarks.bench_stats import fmt, percentile, ratio, spread
from benchmarks.bench_teams import chain_team, talker_team, write_scenario

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PHASES = ("steps", "throughput", "history", "latency", "breaker", "concurrency", "long")
HISTORY_AT = (10, 50, 100)
TARGETS = {
    "per_step_ratio_max": 1.10,
    "throughput_ratio_min": 0.90,
    "latency_p50_ms_max": 40.0,
    "breaker_fail_fast_ms_max": 5.0,
}


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to run."""

    reps: int
    steps: int
    step_runs: int
    throughput_runs: int
    concurrency_runs: int
    latency_runs: int
    history_turns: int
    breaker_calls: int
    long_turns: tuple[int, ...]


FULL = Plan(
    reps=3,
    steps=20,
    step_runs=5,
    throughput_runs=500,
    concurrency_runs=1000,
    latency_runs=50,
    history_turns=101,
    breaker_calls=50,
    long_turns=LONG_TURNS,
)
QUICK = Plan(
    reps=3,
    steps=5,
    step_runs=2,
    throughput_runs=40,
    concurrency_runs=60,
    latency_runs=10,
    history_turns=101,
    breaker_calls=10,
    long_turns=LONG_QUICK_TURNS,
)


def say(text: str) -> None:
    """Progress line on standard error (the table goes to standard output)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the two ways to run


class Runner:
    """Starts and awaits runs of both kinds on one server: the platform's saga and the bare workflow."""

    def __init__(self, keel_client: Client, bare_client: Client, queues: dict[str, str]) -> None:
        self.bare_client = bare_client
        self.queues = queues
        # The platform's own starter API, as a user script starts runs; one per saga worker kind.
        self.keels = {
            kind: Keel(keel_client, settings=Settings(task_queue=queue))
            for kind, queue in queues.items()
            if kind != "bare"
        }

    @property
    def keel(self) -> Keel:
        """The starter for the platform's real worker."""
        return self.keels["saga"]

    async def saga(self, team: TeamSpec, goal: str, kind: str = "saga") -> SagaResult:
        """Start one saga on the `kind` worker and wait for it; fails unless it completed."""
        handle = await self.keels[kind].start(team, goal)
        result = await handle.result()
        if result.status != SagaStatus.COMPLETED:
            raise RuntimeError(f"saga {handle.workflow_id} ended {result.status}: {result.reason}")
        return result

    async def bare(self, steps: int, sleep: bool = False) -> int:
        """Start one bare workflow of `steps` activities and wait for it."""
        return int(
            await self.bare_client.execute_workflow(
                BARE_WORKFLOW,
                args=[steps, sleep],
                id=f"bench-bare-{uuid.uuid4().hex[:12]}",
                task_queue=self.queues["bare"],
            )
        )

    def one(self, kind: str, steps: int, sleep: bool = False) -> Callable[[], Awaitable[Any]]:
        """A zero-argument coroutine factory running one run of `kind` with `steps` steps."""
        if kind != "bare":
            team = chain_team(steps)
            return lambda: self.saga(team, f"benchmark chain of {steps}", kind)
        return lambda: self.bare(steps, sleep)


async def timed(factory: Callable[[], Awaitable[Any]]) -> float:
    """Seconds one awaited run takes."""
    started = time.perf_counter()
    await factory()
    return time.perf_counter() - started


async def burst(factory: Callable[[], Awaitable[Any]], count: int) -> float:
    """Seconds from starting `count` runs at once to the last one's end."""
    started = time.perf_counter()
    await asyncio.gather(*(factory() for _ in range(count)))
    return time.perf_counter() - started


def kinds_for(rep: int) -> tuple[str, str]:
    """Alternate which kind goes first, so drift on a shared machine does not favour one."""
    return ("bare", "saga") if rep % 2 == 0 else ("saga", "bare")


# --------------------------------------------------------------------------- measurements


async def measure_steps(runner: Runner, plan: Plan) -> dict[str, Any]:
    """1. Per-step time of an N-step saga vs an N-activity bare workflow, runs one at a time."""
    per_step: dict[str, list[float]] = {"saga": [], "bare": [], "stub": []}
    for rep in range(plan.reps):
        for kind in (*kinds_for(rep), "stub"):
            factory = runner.one(kind, plan.steps)
            times = [await timed(factory) for _ in range(plan.step_runs)]
            per_step[kind].append(sorted(times)[len(times) // 2] / plan.steps * 1000)
        say(
            f"steps rep {rep + 1}: saga {per_step['saga'][-1]:.1f} ms/step, bare {per_step['bare'][-1]:.1f}, "
            f"saga with stubbed call_llm {per_step['stub'][-1]:.1f}"
        )
    saga, bare, stub = spread(per_step["saga"]), spread(per_step["bare"]), spread(per_step["stub"])
    return {
        "steps": plan.steps,
        "runs_per_rep": plan.step_runs,
        "saga_ms_per_step": saga,
        "bare_ms_per_step": bare,
        "diagnostic_saga_stub_llm_ms_per_step": stub,
        "diagnostic_stub_ratio": ratio(stub, bare),
        "ratio": ratio(saga, bare),
        "target_max": TARGETS["per_step_ratio_max"],
    }


async def measure_throughput(
    runner: Runner, plan: Plan, pids: dict[str, dict[str, int]], steps: int = 4
) -> dict[str, Any]:
    """2. Completions per second of runs started all at once, and the CPU each process spent per run.

    Args:
        pids: Per kind, the processes whose CPU to count (server, worker, provider).
    """
    rates: dict[str, list[float]] = {"saga": [], "bare": []}
    cpu: dict[str, dict[str, list[float]]] = {
        kind: {name: [] for name in (*pids[kind], "starter")} for kind in rates
    }
    for rep in range(plan.reps):
        for kind in kinds_for(rep):
            before = {name: cpu_seconds(pid) for name, pid in pids[kind].items()}
            own = time.process_time()
            seconds = await burst(runner.one(kind, steps), plan.throughput_runs)
            rates[kind].append(plan.throughput_runs / seconds)
            for name, pid in pids[kind].items():
                cpu[kind][name].append((cpu_seconds(pid) - before[name]) / plan.throughput_runs * 1000)
            cpu[kind]["starter"].append((time.process_time() - own) / plan.throughput_runs * 1000)
        say(f"throughput rep {rep + 1}: saga {rates['saga'][-1]:.1f}/s, bare {rates['bare'][-1]:.1f}/s")
    saga, bare = spread(rates["saga"], 2), spread(rates["bare"], 2)
    return {
        "runs": plan.throughput_runs,
        "steps": steps,
        "saga_per_s": saga,
        "bare_per_s": bare,
        "ratio": ratio(saga, bare),
        "target_min": TARGETS["throughput_ratio_min"],
        "cpu_ms_per_run": {
            kind: {name: spread(values, 1) for name, values in per.items()} for kind, per in cpu.items()
        },
    }


async def measure_latency(runner: Runner, plan: Plan) -> dict[str, dict[str, Any]]:
    """3. One-step run latency, runs one at a time: p50 and p99 per repetition."""
    out: dict[str, dict[str, Any]] = {}
    p50: dict[str, list[float]] = {"saga": [], "bare": []}
    p99: dict[str, list[float]] = {"saga": [], "bare": []}
    for rep in range(plan.reps):
        for kind in kinds_for(rep):
            factory = runner.one(kind, 1)
            times = [await timed(factory) * 1000 for _ in range(plan.latency_runs)]
            p50[kind].append(percentile(times, 50))
            p99[kind].append(percentile(times, 99))
    for kind in ("saga", "bare"):
        out[kind] = {"p50_ms": spread(p50[kind], 1), "p99_ms": spread(p99[kind], 1)}
    return out


async def measure_history(runner: Runner, keel_client: Client, plan: Plan) -> dict[str, Any]:
    """7. Bytes of workflow history per LLM turn of one long conversation."""
    team = talker_team(plan.history_turns)
    per_turn: dict[int, list[float]] = {t: [] for t in HISTORY_AT}
    payload: dict[int, list[float]] = {t: [] for t in HISTORY_AT}
    total_at: dict[int, list[float]] = {t: [] for t in HISTORY_AT}
    totals: list[float] = []
    for rep in range(plan.reps):
        handle = await runner.keel.start(team, "a long benchmark conversation")
        result = await handle.result()
        if result.status != SagaStatus.COMPLETED:
            raise RuntimeError(f"long conversation ended {result.status}: {result.reason}")
        turns = await history_turns(keel_client, handle.workflow_id)
        if len(turns) < max(HISTORY_AT):
            raise RuntimeError(f"only {len(turns)} LLM turns in the history, expected {max(HISTORY_AT)}")
        running = 0
        cumulative: list[int] = []
        for turn in turns:
            running += turn["bytes"]
            cumulative.append(running)
        for t in HISTORY_AT:
            per_turn[t].append(turns[t - 1]["bytes"])
            payload[t].append(turns[t - 1]["llm_payload_bytes"])
            total_at[t].append(turns[t - 1]["start_offset"] + turns[t - 1]["bytes"])
        totals.append(sum(turn["bytes"] for turn in turns) + turns[0]["start_offset"])
        say(f"history rep {rep + 1}: " + ", ".join(f"turn {t} {per_turn[t][-1]:.0f} B" for t in HISTORY_AT))
    rows = {}
    for t in HISTORY_AT:
        bytes_, base = spread(per_turn[t], 0), spread(payload[t], 0)
        rows[str(t)] = {
            "history_bytes_this_turn": bytes_,
            "llm_request_and_answer_bytes": base,
            "ratio": ratio(bytes_, base),
            "history_bytes_so_far": spread(total_at[t], 0),
        }
    return {"turns": plan.history_turns, "at_turn": rows, "total_bytes": spread(totals, 0)}


async def measure_breaker(folder: Path, scenario: Path, main_port: int, plan: Plan) -> dict[str, Any]:
    """6. `call_llm` while a provider's breaker is open: fail fast, fail over; no request reaches it."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from agentkeel import errors
    from agentkeel.activities.llm import LLMActivities
    from agentkeel.activities.llm_config import LLMConfig
    from agentkeel.contracts import ChatMessage, LLMRequest

    primary = Provider(folder / "primary", scenario)
    await primary.start()
    try:
        await primary.set_faults(error_rates={500: 1.0})
        settings = Settings(llm_port=main_port)
        config = LLMConfig.from_dict(
            {
                "providers": {
                    "primary": {
                        "base_url": f"http://127.0.0.1:{primary.port}/v1",
                        "fail_max": 3,
                        "reset_timeout_s": 3600,
                    }
                },
                "models": {
                    "default": {"chain": ["offline:scripted"]},
                    "solo": {"chain": ["primary:scripted"]},
                    "failover": {"chain": ["primary:scripted", "offline:scripted"]},
                },
            },
            settings,
            {},
        )
        llm = LLMActivities(config, env={})
        env = ActivityEnvironment()

        def request(alias: str) -> LLMRequest:
            return LLMRequest(
                model=alias,
                messages=[
                    ChatMessage(role="system", content="You are agent c1a1 of a benchmark chain."),
                    ChatMessage(role="user", content="benchmark chain of 1"),
                ],
                correlation_id=uuid.uuid4().hex,
                idempotency_key=uuid.uuid4().hex,
                agent="c1a1",
            )

        async def call(alias: str) -> tuple[float, str | None]:
            started = time.perf_counter()
            try:
                result = await env.run(llm.call_llm, request(alias))
                outcome = f"ok:{result.provider}"
            except ApplicationError as exc:
                outcome = exc.type
            return (time.perf_counter() - started) * 1000, outcome

        # Open the breaker: provider failures in a row, up to its fail_max.
        trip: list[str | None] = []
        for _ in range(10):
            _, outcome = await call("solo")
            trip.append(outcome)
            if outcome == errors.CIRCUIT_OPEN:
                break
        if trip[-1] != errors.CIRCUIT_OPEN:
            raise RuntimeError(f"the breaker did not open: outcomes {trip}")
        before = await primary.journal()
        seq = max((e["seq"] for e in before), default=0)
        figures: dict[str, list[float]] = {"fail_fast": [], "failover": [], "normal": []}
        outcomes: dict[str, set[str | None]] = {k: set() for k in figures}
        for _ in range(plan.reps):
            for key, alias in (("normal", "default"), ("fail_fast", "solo"), ("failover", "failover")):
                times = []
                for _ in range(plan.breaker_calls):
                    ms, outcome = await call(alias)
                    times.append(ms)
                    outcomes[key].add(outcome)
                figures[key].append(percentile(times, 50))
        leaked = len(await primary.journal(seq))
        await llm.aclose()
    finally:
        await primary.stop()
    fail_fast, failover, normal = (spread(figures[k], 3) for k in ("fail_fast", "failover", "normal"))
    return {
        "calls_per_rep": plan.breaker_calls,
        "trip_outcomes": trip,
        "fail_fast_ms": fail_fast,
        "fail_fast_outcomes": sorted(map(str, outcomes["fail_fast"])),
        "failover_ms": failover,
        "failover_outcomes": sorted(map(str, outcomes["failover"])),
        "normal_call_ms": normal,
        "requests_to_open_provider": leaked,
        "target_ms_max": TARGETS["breaker_fail_fast_ms_max"],
    }


class RssSampler:
    """Reads a process's resident memory every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[int] = []
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling in a background task."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append(memory_of(self.pid).get("VmRSS", 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.every)

    async def stop(self) -> list[int]:
        """Stop sampling; returns the samples in bytes."""
        self._done.set()
        if self._task is not None:
            await self._task
        return self.samples


async def measure_concurrency(
    folder: Path, address: str, provider: Provider, keel_client: Client, bare_client: Client, plan: Plan
) -> dict[str, Any]:
    """4 and 5. Latency-bound runs (4 steps of 1 s each) started at once, in fresh worker processes:
    wall time, and the worker's resident memory before, during (sampled) and at peak."""
    wall: dict[str, list[float]] = {"saga": [], "bare": []}
    idle: dict[str, list[float]] = {"saga": [], "bare": []}
    peak: dict[str, list[float]] = {"saga": [], "bare": []}
    per_run: dict[str, list[float]] = {"saga": [], "bare": []}
    for rep in range(plan.reps):
        for kind in kinds_for(rep):
            async with workers(folder, address, provider.port, kinds=(kind,), tag=f"-c{rep}") as procs:
                proc = procs[kind]
                runner = Runner(keel_client, bare_client, {kind: proc.task_queue, "saga": proc.task_queue})
                await provider.set_faults(latency_ms=0)
                await runner.one(kind, 4)()  # warm-up: imports, sandbox, connections
                await provider.set_faults(latency_ms=1000)
                rest = proc.memory().get("VmRSS", 0)
                sampler = RssSampler(proc.child.pid)
                sampler.start()
                try:
                    seconds = await burst(runner.one(kind, 4, sleep=True), plan.concurrency_runs)
                finally:
                    samples = await sampler.stop()
                    await provider.set_faults(latency_ms=0)
                hwm = proc.memory().get("VmHWM", 0)
                wall[kind].append(seconds)
                idle[kind].append(rest / 2**20)
                peak[kind].append(hwm / 2**20)
                per_run[kind].append((max(samples, default=rest) - rest) / plan.concurrency_runs / 1024)
        say(f"concurrency rep {rep + 1}: saga {wall['saga'][-1]:.1f} s, bare {wall['bare'][-1]:.1f} s")
    saga_wall, bare_wall = spread(wall["saga"], 2), spread(wall["bare"], 2)
    memory = {}
    for kind in ("saga", "bare"):
        memory[kind] = {
            "rss_before_mb": spread(idle[kind], 1),
            "peak_rss_mb": spread(peak[kind], 1),
            "kb_per_in_flight_run": spread(per_run[kind], 1),
        }
    return {
        "concurrency": {
            "runs": plan.concurrency_runs,
            "steps": 4,
            "step_latency_s": 1.0,
            "saga_wall_s": saga_wall,
            "bare_wall_s": bare_wall,
            "ratio": ratio(saga_wall, bare_wall),
            "ideal_wall_s": 4.0,
        },
        "memory": {
            "runs_in_flight": plan.concurrency_runs,
            "saga": memory["saga"],
            "bare": memory["bare"],
            "ratio_peak": ratio(memory["saga"]["peak_rss_mb"], memory["bare"]["peak_rss_mb"]),
            "ratio_per_run": ratio(
                memory["saga"]["kb_per_in_flight_run"], memory["bare"]["kb_per_in_flight_run"]
            ),
        },
    }


# --------------------------------------------------------------------------- the run


async def _clients(address: str) -> tuple[Client, Client]:
    keel_client = await connect(address=address)
    bare_client = await Client.connect(address)
    return keel_client, bare_client


async def run(plan: Plan, phases: tuple[str, ...], folder: Path) -> dict[str, Any]:
    """Run the chosen measurements, return the results document."""
    results: dict[str, Any] = {}
    if set(phases) - {"long"}:
        results.update(await _run_stack(plan, phases, folder))
    if "long" in phases:
        # On its own fresh server, provider and worker: the same conditions as its baseline
        # (`python -m benchmarks.bench_long --save-baseline`), whatever ran before it.
        say(f"8. long conversation: {', '.join(map(str, plan.long_turns))} tool turns")
        results["long"] = await run_long(folder / "long", plan.long_turns)
    return results


async def _run_stack(plan: Plan, phases: tuple[str, ...], folder: Path) -> dict[str, Any]:
    """Start the stack, run the chosen measurements but the long conversation, return their results."""
    scenario = write_scenario(folder / "scenarios", (1, 4, plan.steps), plan.history_turns)
    results: dict[str, Any] = {}
    provider = Provider(folder, scenario)
    await provider.start()
    try:
        async with keel_server(folder) as server:
            say(f"keel server at {server.address} (SQLite {server.db_path}), provider on :{provider.port}")
            keel_client, bare_client = await _clients(server.address)
            needs_workers = {"steps", "throughput", "history", "latency"} & set(phases)
            if needs_workers:
                async with workers(folder, server.address, provider.port, ("bare", "saga", "stub")) as procs:
                    runner = Runner(keel_client, bare_client, {k: p.task_queue for k, p in procs.items()})
                    for kind in procs:  # warm-up: imports, sandbox, connections
                        for _ in range(3):
                            await runner.one(kind, 4)()
                    if "latency" in phases:
                        # First, while the server holds only the warm-up runs: the plain server
                        # it is compared with is measured fresh too.
                        say("3. latency on the keel server")
                        results.setdefault("latency", {})["keel_server"] = await measure_latency(runner, plan)
                    if "steps" in phases:
                        say("1. per-step overhead")
                        results["per_step"] = await measure_steps(runner, plan)
                    if "throughput" in phases:
                        say("2. throughput")
                        assert server.process is not None
                        common = {"server": server.process.pid, "provider": provider.child.pid}
                        pids = {
                            "saga": {**common, "worker": procs["saga"].child.pid},
                            "bare": {**common, "worker": procs["bare"].child.pid},
                        }
                        results["throughput"] = await measure_throughput(runner, plan, pids)
                    if "history" in phases:
                        say("7. history growth")
                        results["history"] = await measure_history(runner, keel_client, plan)
            if "breaker" in phases:
                say("6. breaker fail-fast")
                results["breaker"] = await measure_breaker(folder, scenario, provider.port, plan)
            if "concurrency" in phases:
                say("4+5. latency-bound concurrency and memory")
                results.update(
                    await measure_concurrency(
                        folder, server.address, provider, keel_client, bare_client, plan
                    )
                )
        if "latency" in phases:
            say("3. latency on a plain temporal server start-dev --db-filename")
            async with plain_server(folder) as address:
                keel_client, bare_client = await _clients(address)
                async with workers(folder, address, provider.port, tag="-plain") as procs:
                    runner = Runner(keel_client, bare_client, {k: p.task_queue for k, p in procs.items()})
                    for kind in ("saga", "bare"):
                        for _ in range(3):
                            await runner.one(kind, 1)()
                    results["latency"]["plain_server"] = await measure_latency(runner, plan)
            lat = results["latency"]
            lat["target_p50_ms_max"] = TARGETS["latency_p50_ms_max"]
            lat["ratio_p50_saga"] = ratio(
                lat["keel_server"]["saga"]["p50_ms"], lat["plain_server"]["saga"]["p50_ms"]
            )
            lat["ratio_p50_bare"] = ratio(
                lat["keel_server"]["bare"]["p50_ms"], lat["plain_server"]["bare"]["p50_ms"]
            )
            lat["runs_per_rep"] = plan.latency_runs
    finally:
        await provider.stop()
    return results


# --------------------------------------------------------------------------- report


def _verdict(value: float | None, limit: float, *, most: bool) -> str:
    if value is None:
        return "n/a"
    ok = value <= limit if most else value >= limit
    return "met" if ok else "MISSED"


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (median [min-max] of the repetitions)."""
    rows: list[tuple[str, str, str, str, str]] = []
    if s := results.get("per_step"):
        rows.append(
            (
                f"1. per-step time, {s['steps']}-step run",
                fmt(s["saga_ms_per_step"], "ms"),
                fmt(s["bare_ms_per_step"], "ms"),
                f"{s['ratio']}",
                f"≤ {s['target_max']}: {_verdict(s['ratio'], s['target_max'], most=True)}",
            )
        )
        rows.append(
            (
                "1. (diagnostic) same, saga with call_llm stubbed in process",
                fmt(s["diagnostic_saga_stub_llm_ms_per_step"], "ms"),
                fmt(s["bare_ms_per_step"], "ms"),
                f"{s['diagnostic_stub_ratio']}",
                "workflow side only: no HTTP, no provider",
            )
        )
    if t := results.get("throughput"):
        rows.append(
            (
                f"2. throughput, {t['runs']} × {t['steps']}-step runs at once",
                fmt(t["saga_per_s"], "runs/s"),
                fmt(t["bare_per_s"], "runs/s"),
                f"{t['ratio']}",
                f"≥ {t['target_min']}: {_verdict(t['ratio'], t['target_min'], most=False)}",
            )
        )
    if (lat := results.get("latency")) and "plain_server" in lat:
        limit = lat["target_p50_ms_max"]
        for kind, label in (("saga", "1-step saga"), ("bare", "1-activity bare workflow")):
            keel, plain = lat["keel_server"][kind], lat["plain_server"][kind]
            target = f"p50 ≤ {limit:.0f} ms: {_verdict(keel['p50_ms']['median'], limit, most=True)}"
            rows.append(
                (
                    f"3. {label} p50, keel server vs plain start-dev",
                    fmt(keel["p50_ms"], "ms"),
                    fmt(plain["p50_ms"], "ms"),
                    f"{ratio(keel['p50_ms'], plain['p50_ms'])}",
                    target,
                )
            )
            rows.append(
                (
                    f"3. {label} p99, keel server vs plain start-dev",
                    fmt(keel["p99_ms"], "ms"),
                    fmt(plain["p99_ms"], "ms"),
                    f"{ratio(keel['p99_ms'], plain['p99_ms'])}",
                    "",
                )
            )
    if c := results.get("concurrency"):
        rows.append(
            (
                f"4. wall time, {c['runs']} runs × {c['steps']} calls of 1 s",
                fmt(c["saga_wall_s"], "s"),
                fmt(c["bare_wall_s"], "s"),
                f"{c['ratio']}",
                f"(ideal {c['ideal_wall_s']:.0f} s)",
            )
        )
    if m := results.get("memory"):
        rows.append(
            (
                "5. worker peak RSS",
                fmt(m["saga"]["peak_rss_mb"], "MB"),
                fmt(m["bare"]["peak_rss_mb"], "MB"),
                f"{m['ratio_peak']}",
                "",
            )
        )
        rows.append(
            (
                f"5. RSS per in-flight run ({m['runs_in_flight']} in flight)",
                fmt(m["saga"]["kb_per_in_flight_run"], "KB"),
                fmt(m["bare"]["kb_per_in_flight_run"], "KB"),
                f"{m['ratio_per_run']}",
                "",
            )
        )
    if b := results.get("breaker"):
        ok = _verdict(b["fail_fast_ms"]["median"], b["target_ms_max"], most=True)
        leak = b["requests_to_open_provider"]
        rows.append(
            (
                "6. call_llm fail-fast, breaker open (vs a normal call)",
                fmt(b["fail_fast_ms"], "ms", 2),
                fmt(b["normal_call_ms"], "ms", 2),
                f"{ratio(b['fail_fast_ms'], b['normal_call_ms'])}",
                f"< {b['target_ms_max']:.0f} ms: {ok}; requests sent: {leak}",
            )
        )
        rows.append(
            (
                "6. call_llm fail-over, breaker open (vs a normal call)",
                fmt(b["failover_ms"], "ms", 2),
                fmt(b["normal_call_ms"], "ms", 2),
                f"{ratio(b['failover_ms'], b['normal_call_ms'])}",
                f"requests sent: {leak}",
            )
        )
    if h := results.get("history"):
        for turn, row in h["at_turn"].items():
            rows.append(
                (
                    f"7. history bytes of LLM turn {turn} (vs its raw LLM request + answer)",
                    fmt(row["history_bytes_this_turn"], "B", 0),
                    fmt(row["llm_request_and_answer_bytes"], "B", 0),
                    f"{row['ratio']}",
                    f"{row['history_bytes_so_far']['median']:.0f} B so far",
                )
            )
    head = ("figure", "agentkeel", "baseline", "ratio", "target / note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_table(results: dict[str, Any]) -> str:
    """CPU milliseconds each process spent per run in the throughput phase."""
    cpu = results.get("throughput", {}).get("cpu_ms_per_run")
    if not cpu:
        return ""
    names = list(cpu["saga"])
    lines = [
        "| CPU ms per 4-step run (throughput phase) | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for kind in ("saga", "bare"):
        lines.append(f"| {kind} | " + " | ".join(fmt(cpu[kind][n], "", 1) for n in names) + " |")
    return "\n".join(lines)


def describe_machine(info: dict[str, Any]) -> str:
    """One line naming the machine."""
    return (
        f"{info['cpu_model']}, {info['cores']} cores, {info['ram_gb']} GB RAM, {info['os']}, "
        f"Python {info['python']}, temporalio {info['temporalio']}, {info['temporal_cli']}"
    )


SHAPES = {
    "saga_n_steps": "chain of N agents; each makes one call_llm (offline provider, 0 ms latency) and hands "
    "off to the next, the last answers: N activities; started with the starter API (keel.start)",
    "bare_n_steps": "bare-SDK workflow running N no-op async activities in a row; default data converter, "
    "default sandbox, no interceptors",
    "workers": "one worker process per kind, same max_concurrent_activities / workflow_tasks "
    "(platform defaults); the saga worker logs JSON at INFO like `keel worker`",
    "server": "temporal server start-dev as `keel server` starts it (SQLite file, WAL, synchronous=normal, "
    "transferProcessorMaxPollRPS=10000); the plain server is start-dev --db-filename with only the "
    "search attributes added",
    "concurrency": "N runs of 4 steps started at once: saga steps are call_llm against the provider "
    "at 1 s latency, bare steps are activities that await asyncio.sleep(1); fresh worker per repetition",
    "history": "one agent calling the no-op tool bench_noop on every turn and answering on the last; "
    "bytes = protobuf size of the events from a turn's call_llm scheduling to the next one's (payloads "
    "as stored, i.e. after the platform's codec); baseline = the turn's call_llm input and result "
    "payloads before the codec",
    "long": LONG_SHAPE,
    "breaker": "call_llm run in-process (ActivityEnvironment) against a second provider answering 500 "
    "until its breaker (fail_max 3) opens; fail-fast = alias with only that provider, fail-over = alias "
    "falling back to the main provider; normal = a call to the main provider",
}


async def _interruptible(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run `coro`, cancelling it on SIGINT/SIGTERM so every child process is stopped in order."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def worker_settings() -> dict[str, Any]:
    """The limits both kinds of worker run with (the platform's defaults)."""
    defaults = Settings()
    out: dict[str, Any] = {
        "max_concurrent_activities": defaults.max_concurrent_activities,
        "max_concurrent_workflow_tasks": defaults.max_concurrent_workflow_tasks,
    }
    with contextlib.suppress(Exception):
        from agentkeel.activities.llm_config import ProviderConfig

        out["llm_max_connections_per_provider"] = ProviderConfig(
            name="x", base_url="http://x/v1"
        ).max_connections
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the JSON; leaves through `os._exit`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller runs, for development")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (server databases, logs)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    phases = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    (folder / "keel.toml").write_text("")
    # The worker processes read this empty config, not a keel.toml lying in the working directory.
    os.environ["KEEL_CONFIG"] = str(folder / "keel.toml")
    configure_logging("console", "WARNING")
    info = machine()
    say(f"machine: {describe_machine(info)}; working folder {folder}")
    started = time.perf_counter()
    code = 0
    try:
        results = asyncio.run(_interruptible(run(plan, phases, folder)))
    except (Exception, asyncio.CancelledError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc} (logs in {folder})")
        sys.stderr.flush()
        os._exit(1)
    document = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "quick": args.quick,
        "machine": info,
        "plan": asdict(plan),
        "targets": TARGETS,
        "shapes": SHAPES,
        "worker_settings": worker_settings(),
        "python_bytecode_cache": "on for every Python child (PYTHONPYCACHEPREFIX in the working folder)",
        "results": results,
    }
    out = args.out or RESULTS_DIR / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nagentkeel benchmark ({'quick' if args.quick else 'full'} run, {document['duration_s']} s)")
    print(f"machine: {describe_machine(info)}\n")
    if set(results) - {"long"}:
        print(table(results))
    if extra := cpu_table(results):
        print("\n" + extra)
    if "long" in results:
        print("\n" + long_table(results["long"]))
    print(f"\nmedian [min-max] of {plan.reps} repetitions; JSON: {out}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
