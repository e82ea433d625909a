"""`make chaos`: break real processes while agent runs are in flight, and show that nothing is lost.

    .venv/bin/python -m benchmarks.chaos [--only NAME ...] [--quick] [--keep DIR]

Each scenario starts its own Temporal dev server on a SQLite file, an offline
LLM provider and `keel worker` subprocesses, runs unattended `travel` sagas
(the shipped team with `charge_card` needing no review), injects one fault,
and prints a row: fault, runs, completed, lost, side effects duplicated,
recovery seconds against their limit, and scenario figures. The exit code is 1
when any row misses a check.

Scenarios (names for `--only`):

* `kill-llm`: the only worker is SIGKILLed while LLM calls are in flight; a
  second worker finishes every run within heartbeat timeout + 2 s.
* `kill-tool`: the worker is SIGKILLed while tool activities are in flight (the
  ledger's write lock holds them inside their write; the kill lands as the
  first write commits, so some side effects are done but never reported).
* `llm-outage`: the provider drops every request for 30 s while 20 runs are in
  flight; breakers open, no run fails, all finish within outage + reset + 10 s,
  and the provider sees almost no requests while it is down.
* `429-storm`: half the requests answer 429 with `Retry-After`; every retry of
  a step waits at least what the provider asked (journal, per idempotency key).
* `server-restart`: the dev server is stopped and started again on its SQLite
  file mid-run; every run completes afterwards.
* `two-workers`: two workers share the runs and one is SIGKILLed; the other
  takes over with no duplicate side effect.

`tests/test_chaos.py` runs the same scenarios with smaller figures (`QUICK`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentkeel.workflows.policies import LLM_HEARTBEAT, LLM_OUTAGE_PAUSE, LLM_RETRY
from benchmarks.chaos_stack import (
    ChaosStack,
    RunOutcome,
    breaker_open_spans,
    idempotency_key,
    ledger_write_lock,
)

OPEN_GRACE_S = 0.05
"""Requests arriving this soon after the breaker opened were admitted before it did."""
RECOVERY_LIMIT_S = (LLM_HEARTBEAT + LLM_RETRY.initial_interval).total_seconds() + 2.0
"""A killed worker's in-flight work resumes elsewhere within the heartbeat timeout, plus the retry
policy's first backoff (2 s, a deliberate choice for LLM calls), plus 2 s."""


@dataclass(frozen=True)
class Figures:
    """Sizes and durations of the scenarios."""

    kill_runs: int = 6
    kill_latency_ms: float = 1500
    tool_runs: int = 3
    tool_patience_s: float = 120
    """How long the tool scenario waits for its runs (without a heartbeat timeout: start-to-close)."""
    outage_runs: int = 20
    outage_s: float = 30
    outage_reset_s: float = 30
    storm_runs: int = 10
    storm_rate: float = 0.5
    storm_retry_after_s: float = 2.0
    restart_runs: int = 6
    restart_down_s: float = 5
    pair_runs: int = 8
    run_patience_s: float = 90
    """Longest wait for the runs of a scenario after its fault."""


FULL = Figures()
QUICK = Figures(
    kill_runs=4,
    kill_latency_ms=1200,
    tool_runs=2,
    tool_patience_s=RECOVERY_LIMIT_S + 5,
    outage_runs=8,
    outage_s=10,
    outage_reset_s=10,
    storm_runs=5,
    storm_rate=0.35,
    storm_retry_after_s=1.5,
    restart_runs=4,
    restart_down_s=3,
    pair_runs=4,
    run_patience_s=60,
)


@dataclass
class Row:
    """One scenario's outcome: the table row and the checks behind it."""

    fault: str
    runs: int
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None
    limit_s: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check held."""
        return all(self.checks.values())

    def failed_checks(self) -> list[str]:
        """Names of the checks that did not hold."""
        return [name for name, ok in self.checks.items() if not ok]

    def score(self, outcomes: list[RunOutcome], duplicated: int, incomplete: list[str]) -> None:
        """Fill completed / lost / duplicated from the runs and the ledger, with their checks."""
        self.completed = sum(1 for o in outcomes if o.status is not None and o.status.value == "Completed")
        self.lost = self.runs - self.completed
        self.duplicated = duplicated
        self.checks["no run lost"] = self.lost == 0
        self.checks["no side effect duplicated"] = duplicated == 0
        self.checks["every completed run booked each step once"] = not incomplete
        for o in outcomes:
            if o.status is None or o.status.value != "Completed":
                self.details.append(
                    f"{o.workflow_id}: {o.status.value if o.status else 'running'} {o.reason}"
                )

    def recovery(self, seconds: float | list[float] | None, limit: float | None) -> None:
        """Record the recovery time (the longest of per-run gaps) and check it against `limit`."""
        if isinstance(seconds, list):
            self.details.append("per-run recovery s: " + ", ".join(f"{g:.1f}" for g in seconds))
            seconds = seconds[0] if seconds else None
        self.recovery_s = seconds
        self.limit_s = limit
        if limit is not None:
            self.checks["recovery within limit"] = seconds is not None and seconds <= limit


Scenario = Callable[[Path, Figures, "str | None"], Awaitable[Row]]


async def _finish(stack: ChaosStack, row: Row, handles: list, within: float) -> list[RunOutcome]:
    outcomes = await stack.wait_runs(handles, within)
    for handle, outcome in zip(handles, outcomes, strict=True):
        if outcome.status is None:  # do not leave it retrying on a shared server
            try:
                await handle.terminate(reason="chaos scenario gave up waiting")
            except Exception as exc:  # already gone: nothing to tidy
                row.details.append(f"terminate {handle.id}: {exc}")
    check = stack.ledger_check(outcomes)
    row.score(outcomes, check.duplicated, check.incomplete)
    return outcomes


async def _wait_journal(stack: ChaosStack, count: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while len(stack.journal()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the provider saw fewer than {count} requests in {within:.0f}s")
        await asyncio.sleep(0.1)


def _kill_after_first_write(stack: ChaosStack) -> tuple[float, int]:
    # The lock is gone: the blocked writes commit within the busy handler's next sleep (<=100 ms).
    # Poll hard and kill as the first one lands, so side effects are done but not yet reported.
    db = sqlite3.connect(f"file:{stack.ledger_path}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + 5
        while db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.0005)
        killed_at = stack.workers[0].kill()
        return killed_at, int(db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
    finally:
        db.close()


async def _wait_in_flight(stack: ChaosStack, handles: list, kind: str, at_least: int, within: float = 30):
    deadline = time.monotonic() + within
    while True:
        counts = await stack.in_flight(handles)
        if counts[kind] >= at_least:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"fewer than {at_least} {kind} activities in flight after {within:.0f}s: {counts}"
            )
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- scenarios


async def kill_during_llm(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """SIGKILL the only worker while LLM calls are in flight; a second worker finishes every run."""
    row = Row("worker SIGKILL during LLM calls", fig.kill_runs)
    async with ChaosStack(workdir, address=address) as stack:
        assert stack.provider is not None
        stack.provider.control.set_faults(latency_ms=fig.kill_latency_ms)
        await stack.spawn_worker("a")
        handles = await stack.start_runs(fig.kill_runs, "kill-llm")
        await _wait_journal(stack, fig.kill_runs)  # every run is past its first answer
        counts = await _wait_in_flight(stack, handles, "llm", 1)
        killed_at = stack.workers[0].kill()
        row.details.append(f"in flight at the kill: {counts['llm']} LLM calls, {counts['tool']} tool calls")
        stack.provider.control.set_faults(latency_ms=200)
        await stack.spawn_worker("b")
        await _finish(stack, row, handles, fig.run_patience_s)
        row.recovery(await stack.recovery_after(handles, killed_at), RECOVERY_LIMIT_S)
        retried = await stack.retried_activities(handles)
        row.details.append(f"activities retried: {dict(retried) or 'none'}")
        row.checks["LLM calls were in flight"] = counts["llm"] >= 1
    return row


async def kill_during_tool(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """SIGKILL the worker while tool activities are inside their ledger write; a second worker finishes."""
    row = Row("worker SIGKILL during tool calls", fig.tool_runs)
    async with ChaosStack(workdir, address=address) as stack:
        assert stack.provider is not None
        await stack.spawn_worker("a")
        with ledger_write_lock(stack.ledger_path):
            handles = await stack.start_runs(fig.tool_runs, "kill-tool")
            counts = await _wait_in_flight(stack, handles, "tool", fig.tool_runs)
        killed_at, written = await asyncio.to_thread(_kill_after_first_write, stack)
        row.details.append(
            f"in flight at the kill: {counts['tool']} tool calls; side effects already written: {written}"
        )
        await stack.spawn_worker("b")
        await _finish(stack, row, handles, fig.tool_patience_s)
        row.recovery(await stack.recovery_after(handles, killed_at), RECOVERY_LIMIT_S)
        retried = await stack.retried_activities(handles)
        row.details.append(f"activities retried: {dict(retried) or 'none'}")
        row.checks["tool calls were in flight"] = counts["tool"] >= 1
    return row


async def llm_outage(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """The provider drops every request for `outage_s` while runs are in flight."""
    row = Row(f"LLM provider down {fig.outage_s:.0f}s", fig.outage_runs)
    async with ChaosStack(workdir, address=address, reset_timeout_s=fig.outage_reset_s) as stack:
        assert stack.provider is not None
        control = stack.provider.control
        control.set_faults(latency_ms=300)
        worker = await stack.spawn_worker("a")
        handles = await stack.start_runs(fig.outage_runs, "outage")
        await _wait_journal(stack, fig.outage_runs)
        down_at = time.time()
        control.set_faults(down=True, down_mode="drop", latency_ms=300)
        await asyncio.sleep(fig.outage_s)
        control.set_faults(latency_ms=300)
        up_at = time.time()
        limit = fig.outage_s + fig.outage_reset_s + 10
        outcomes = await _finish(stack, row, handles, limit + 30)
        last = max((o.finished_at for o in outcomes if o.finished_at), default=None)
        row.recovery(None if last is None else last - down_at, limit)
        while_down = [e for e in stack.journal() if down_at <= e["ts"] < up_at]
        spans = breaker_open_spans(worker.log())
        # A request the breaker admitted just before it opened may land a few ms after.
        while_open = [e for e in while_down if any(a + OPEN_GRACE_S < e["ts"] < b for a, b in spans)]
        first_open = min((a for a, _ in spans), default=math.inf)
        before_open = sum(1 for e in while_down if e["ts"] <= first_open + OPEN_GRACE_S)
        row.details.append(
            f"requests while down: {len(while_down)} ({before_open} before the breaker opened at "
            f"fail_max={stack.fail_max}, {len(while_down) - before_open - len(while_open)} half-open probes, "
            f"{len(while_open)} while open); breaker opened {len(spans)}x; "
            f"without breakers each run would retry {LLM_RETRY.maximum_attempts}x per outage pause "
            f"({LLM_OUTAGE_PAUSE.total_seconds():.0f}s)"
        )
        row.checks["breaker opened"] = bool(spans)
        row.checks["almost no requests while the breaker was open"] = len(while_open) <= 1
        row.checks["no run failed"] = all(o.status is None or o.status.value == "Completed" for o in outcomes)
    return row


async def rate_limit_storm(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """Answer a share of requests with 429 + `Retry-After`; retries must wait at least that long."""
    row = Row(f"429 storm ({fig.storm_rate:.0%}, Retry-After {fig.storm_retry_after_s:g}s)", fig.storm_runs)
    async with ChaosStack(workdir, address=address) as stack:
        assert stack.provider is not None
        stack.provider.control.set_faults(
            error_rates={429: fig.storm_rate}, retry_after_s=fig.storm_retry_after_s, seed=11
        )
        await stack.spawn_worker("a")
        handles = await stack.start_runs(fig.storm_runs, "storm")
        await _finish(stack, row, handles, fig.run_patience_s)
        by_key: dict[str, list[dict]] = {}
        for entry in stack.journal():
            by_key.setdefault(idempotency_key(entry) or "?", []).append(entry)
        waits: list[float] = []
        for entries in by_key.values():
            entries.sort(key=lambda e: e["seq"])
            for before, after in zip(entries, entries[1:], strict=False):
                if before["status"] == 429:
                    answered = before["ts"] + before["latency_ms"] / 1000
                    waits.append(after["ts"] - answered)
        storms = sum(1 for es in by_key.values() for e in es if e["status"] == 429)
        shortest = min(waits) if waits else None
        row.recovery(shortest, None)
        row.details.append(
            f"429 answers: {storms}; retries after a 429: {len(waits)}; shortest wait "
            f"{'-' if shortest is None else f'{shortest:.2f}s'} (asked {fig.storm_retry_after_s:g}s)"
        )
        row.checks["429s were answered and retried"] = len(waits) > 0
        row.checks["every retry waited Retry-After"] = all(
            w >= fig.storm_retry_after_s - 0.005 for w in waits
        )
    return row


async def server_restart(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """Stop the dev server mid-run and start it again on the same SQLite file and port."""
    row = Row(f"Temporal dev server restart ({fig.restart_down_s:g}s down)", fig.restart_runs)
    async with ChaosStack(workdir) as stack:  # always its own server: it is the thing restarted
        assert stack.provider is not None
        stack.provider.control.set_faults(latency_ms=500)
        worker = await stack.spawn_worker("a")
        handles = await stack.start_runs(fig.restart_runs, "restart")
        await _wait_journal(stack, fig.restart_runs)
        _, back_at = await stack.restart_server(fig.restart_down_s)
        await _finish(stack, row, handles, fig.run_patience_s)
        row.recovery(await stack.recovery_after(handles, back_at), RECOVERY_LIMIT_S)
        row.details.append(
            f"worker survived the restart: {worker.process.poll() is None}; "
            "recovery counted from the server answering again"
        )
        row.checks["worker survived"] = worker.process.poll() is None
    return row


async def two_workers_one_killed(workdir: Path, fig: Figures, address: str | None = None) -> Row:
    """Two workers share the runs; one is SIGKILLed at a random moment (outside a tool call)."""
    row = Row("2 workers, one SIGKILLed", fig.pair_runs)
    async with ChaosStack(workdir, address=address) as stack:
        assert stack.provider is not None
        stack.provider.control.set_faults(latency_ms=800)
        await stack.spawn_worker("a")
        await stack.spawn_worker("b")
        handles = await stack.start_runs(fig.pair_runs, "pair")
        await _wait_journal(stack, fig.pair_runs)
        await asyncio.sleep(random.uniform(0.5, 2.0))
        victim = random.choice(stack.workers)
        # Tool calls are the kill-tool scenario's subject; here the kill lands outside them.
        for _ in range(500):
            if not (await stack.in_flight(handles))["tool"]:
                break
            await asyncio.sleep(0.02)
        killed_at = victim.kill()
        await _finish(stack, row, handles, fig.run_patience_s)
        row.recovery(await stack.recovery_after(handles, killed_at), RECOVERY_LIMIT_S)
        retried = await stack.retried_activities(handles)
        row.details.append(f"killed {victim.name}; activities retried: {dict(retried) or 'none'}")
    return row


SCENARIOS: dict[str, Scenario] = {
    "kill-llm": kill_during_llm,
    "kill-tool": kill_during_tool,
    "llm-outage": llm_outage,
    "429-storm": rate_limit_storm,
    "server-restart": server_restart,
    "two-workers": two_workers_one_killed,
}


# --------------------------------------------------------------------------- table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width table, each followed by its details and failed checks."""
    header = ("fault", "runs", "completed", "lost", "dup. side effects", "recovery s", "limit s", "result")
    cells = [
        (
            r.fault,
            str(r.runs),
            str(r.completed),
            str(r.lost),
            str(r.duplicated),
            _seconds(r.recovery_s),
            _seconds(r.limit_s),
            "ok" if r.ok else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for cell in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)))
    lines.append("")
    for row in rows:
        lines.append(f"{row.fault}:")
        lines += [f"    {d}" for d in row.details]
        if not row.ok:
            lines.append(f"    FAILED: {', '.join(row.failed_checks())}")
    return "\n".join(lines)


async def run_all(names: list[str], fig: Figures, root: Path) -> list[Row]:
    """Run the named scenarios one after another, printing each row as it ends."""
    rows = []
    for name in names:
        started = time.monotonic()
        print(f"chaos: {name} ...", flush=True)
        try:
            row = await SCENARIOS[name](root / name, fig, None)
        except Exception as exc:  # a scenario that could not even run is a failed row
            row = Row(name, 0, checks={"scenario ran": False}, details=[f"{type(exc).__name__}: {exc}"])
        print(
            f"chaos: {name} {'ok' if row.ok else 'FAIL'} in {time.monotonic() - started:.0f}s "
            f"(completed {row.completed}/{row.runs}, lost {row.lost}, duplicated {row.duplicated}, "
            f"recovery {_seconds(row.recovery_s)}s)",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.chaos`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--quick", action="store_true", help="the smaller figures the test suite uses")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and SQLite files in this folder")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    fig = QUICK if args.quick else FULL
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows = asyncio.run(run_all(names, fig, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="keel-chaos-") as tmp:
            rows = asyncio.run(run_all(names, fig, Path(tmp)))
    print()
    print(format_table(rows))
    sys.stdout.flush()
    return 0 if all(r.ok for r in rows) else 1


__all__ = ["FULL", "QUICK", "SCENARIOS", "Figures", "Row", "format_table", "main"]

if __name__ == "__main__":
    import os

    code = main()
    sys.stderr.flush()
    os._exit(code)  # a process that used a Temporal client can abort at exit (sdk-python #300)
