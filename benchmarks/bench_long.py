"""`--only long` of `make bench`: one conversation of 10, 100 and 1,000 tool turns (issue 13).

    python -m benchmarks.bench_long [--turns 10,100,1000] [--quick] [--save-baseline] [--keep]

One agent (`benchmarks/long_app.py`, loaded by the worker with `--app`) calls a tool
returning 2 KB of random text on every turn and answers after N tool turns. For each
N, in separate runs: the stored history of the whole continue-as-new chain (as the
server reports it, and summed from the events), the bytes the last tool turn added,
the runs in the chain, what the conversation store gained (when the code under test
has one), the time per turn, and how many messages the model received in its last
request (from the offline provider's journal) against how many the conversation holds.

The "today" column is the newest `benchmarks/results/long-baseline-*.json`, written by
`--save-baseline` on the code before the conversation store; the table says which
commit it was measured on. Standalone, this module starts its own stack and writes
`benchmarks/results/long-<time>.json`; inside `make bench` its figures go into that run's JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from agentkeel.contracts import TeamSpec
from agentkeel.settings import Settings
from agentkeel.starters.client import Keel
from benchmarks import long_app
from benchmarks.bench_history import chain_runs, turn_breakdown, turns_of
from benchmarks.bench_long_report import (
    RESULTS_DIR,
    TARGETS,
    git_commit,
    latest_baseline,
    long_table,
    summarise,
)
from benchmarks.bench_stack import Provider, cpu_seconds, keel_server, machine, workers
from benchmarks.bench_stats import percentile
from benchmarks.bench_store import store_figures

TURNS = (10, 100, 1000)
QUICK_TURNS = (10, 100)
REPS = {10: 15, 100: 2}
"""Repetitions per N (1 when not listed): the turn-10 time is compared within 10 %, so it is a median."""
AT_TURNS = (1, 10, 100, 1000)
"""Turns of every run whose history bytes are recorded (those the run reaches)."""
CONTEXT_LIMIT_CHARS = 1_000_000_000
"""The provider's context limit, lifted: 1,000 turns of 2 KB are 4 MB of prompt."""


def say(text: str) -> None:
    """Progress line on standard error."""
    print(f"[bench-long {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cap_seconds(turns: int) -> float:
    """How long one run of `turns` tool turns may take before it is terminated and measured as is."""
    return 60.0 + 0.4 * turns


def team_for(turns: int) -> TeamSpec:
    """The app's team with room for exactly `turns` tool turns and the answer (a runaway model stops)."""
    return long_app.team.spec.model_copy(update={"max_turns": turns + 2})


# --------------------------------------------------------------------------- one run


async def _await_result(keel: Keel, handle: Any, turns: int) -> tuple[str, str, str]:
    """The run's status, reason and answer; a run over its cap is terminated and reported as such."""
    cap = cap_seconds(turns)
    try:
        result = await asyncio.wait_for(handle.result(), cap)
    except TimeoutError:
        await keel.client.get_workflow_handle(handle.workflow_id).terminate(reason="benchmark cap")
        return "TimedOut", f"terminated by the benchmark after {cap:.0f} s", ""
    except Exception as exc:  # a failed run is a figure too: record it, measure what it left
        return "Error", f"{type(exc).__name__}: {exc}", ""
    return str(result.status), result.reason or "", (result.output or "")[:200]


def _tool_calls(events: Sequence[HistoryEvent]) -> int:
    """Tool activities the chain scheduled (`bench_payload`)."""
    return sum(
        1
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == long_app.PAYLOAD_TOOL
    )


def _turn_figures(turns: list[dict[str, Any]], n: int, end_ts: float) -> dict[str, Any]:
    """Bytes and times per LLM turn: turn k spans its call_llm scheduling to the next one's."""
    starts = [t["ts"] for t in turns] + [end_ts]
    gaps_ms = [(b - a) * 1000 for a, b in zip(starts, starts[1:], strict=False)][:n]
    sizes = [t["bytes"] for t in turns[:n]]
    return {
        "llm_turns": len(turns),
        "last_tool_turn_bytes": turns[n - 1]["bytes"] if len(turns) >= n else None,
        "final_turn_bytes": turns[-1]["bytes"] if turns else None,
        "turn_bytes_median": percentile(sizes, 50) if sizes else None,
        "turn_bytes_max": max(sizes, default=None),
        "at_turn": {
            str(t): {
                "bytes": turns[t - 1]["bytes"],
                "so_far": turns[t - 1]["start_offset"] + turns[t - 1]["bytes"],
            }
            for t in AT_TURNS
            if t <= min(n, len(turns))
        },
        "turn_ms_median": round(percentile(gaps_ms, 50), 1) if gaps_ms else None,
        "turn_ms_p90": round(percentile(gaps_ms, 90), 1) if gaps_ms else None,
    }


def _model_figures(entries: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """What the model was sent, from the provider's journal entries of one run."""
    chats = [e for e in entries if e.get("messages") is not None]
    if not chats:
        return {"requests": 0}
    first, last = chats[0]["messages"], chats[-1]["messages"]
    # The first request holds what every request starts with (system prompt, goal); each tool
    # turn adds the assistant's call and the tool's result.
    expected = first + 2 * n
    return {
        "requests": len(chats),
        "first_request_messages": first,
        "last_request_messages": last,
        "expected_last_request_messages": expected,
        "every_message": last == expected,
        "last_request_body_bytes": chats[-1].get("body_bytes"),
    }


@dataclass
class Stack:
    """What one run is started on and measured with."""

    keel: Keel
    provider: Provider
    home: Path
    """The worker's `Settings.home` (where the default store lives)."""
    pids: dict[str, int]
    """Processes whose CPU a run is charged: server, worker, provider."""

    def cpu(self) -> dict[str, float]:
        """CPU seconds each process has used so far."""
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}


async def one_run(stack: Stack, n: int) -> dict[str, Any]:
    """Start one conversation of `n` tool turns, wait for it (up to its cap) and measure it."""
    keel, correlation = stack.keel, uuid.uuid4().hex
    seq = max((e["seq"] for e in await stack.provider.journal()), default=0)
    store_before = await store_figures(stack.home)
    cpu_before, started = stack.cpu(), time.perf_counter()
    handle = await keel.start(team_for(n), long_app.goal(n), correlation_id=correlation)
    status, reason, answer = await _await_result(keel, handle, n)
    wall = time.perf_counter() - started
    cpu = {name: (spent - cpu_before[name]) / n * 1000 for name, spent in stack.cpu().items()}
    runs = await chain_runs(keel.client, handle.workflow_id, sizes=True)
    events = [e for run in runs for e in run.events]
    turns = await turns_of(keel.client, events, raw=False)
    entries = [e for e in await stack.provider.journal(seq) if e.get("correlation_id") == correlation]
    reported = [run.reported_bytes for run in runs]
    store_after = await store_figures(stack.home)
    out: dict[str, Any] = {
        "turns": n,
        "workflow_id": handle.workflow_id,
        "status": status,
        "reason": reason,
        "answer": answer,
        "tool_calls": _tool_calls(events),
        "wall_s": round(wall, 3),
        "ms_per_turn": round(wall / n * 1000, 2),
        # CPU moves far less than wall time when other work shares the machine's cores.
        "cpu_ms_per_turn": round(sum(cpu.values()), 2),
        "cpu_ms_per_turn_by_process": {name: round(ms, 2) for name, ms in cpu.items()},
        "runs_in_chain": len(runs),
        "history_bytes_reported": sum(r for r in reported if r is not None) if None not in reported else None,
        "history_bytes_events": sum(run.event_bytes for run in runs),
        "history_events": len(events),
        **_turn_figures(turns, n, events[-1].event_time.ToMicroseconds() / 1e6),
        "last_tool_turn_by_event": turn_breakdown(events, n),
        "model": _model_figures(entries, n),
        "store": _store_delta(store_before, store_after),
        # Two shared cores: other processes' load moves the times; it is recorded beside them.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    _report(out)
    return out


def _report(run: dict[str, Any]) -> None:
    model = run["model"]
    history = run["history_bytes_reported"] or run["history_bytes_events"]
    if run["tool_calls"] != run["turns"] or run["status"] != "Completed":
        say(
            f"PROBLEM: {run['workflow_id']} made {run['tool_calls']} of {run['turns']} tool calls and ended "
            f"{run['status']} {run['reason']!r}; its answer: {run['answer']!r}"
        )
    say(
        f"{run['turns']} turns: {run['status']} in {run['wall_s']:.1f} s, {run['runs_in_chain']} run(s), "
        f"{history / 1e6:.2f} MB of history, last tool turn {run['last_tool_turn_bytes']} B, model's last "
        f"request {model.get('last_request_messages')}/{model.get('expected_last_request_messages')} messages"
    )


def _store_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the store gained during one run (None: the code under test keeps no store)."""
    if after is None:
        return None
    base = before or {}
    delta = {
        key: after[key] - base.get(key, 0)
        for key in ("objects", "stored_bytes", "plain_bytes", "file_bytes")
        if isinstance(after.get(key), int)
    }
    return {**delta, "total_after": after}


# --------------------------------------------------------------------------- the phase


async def measure_long(
    folder: Path,
    address: str,
    keel_client: Client,
    turns: Sequence[int] = TURNS,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """The long-conversation phase on a running server: its own provider (bodies kept out of the
    journal, context limit lifted) and its own worker with the app; every N in `turns`.

    Args:
        server_pid: The Temporal server's process, whose CPU is counted with the worker's and provider's.
    """
    provider = Provider(folder, long_app.SCENARIO_FILE, extra_args=("--no-journal-bodies",), name="-long")
    await provider.start()
    try:
        await provider.set_faults(context_limit_chars=CONTEXT_LIMIT_CHARS)
        async with workers(
            folder, address, provider.port, kinds=("saga",), tag="-long", apps=("benchmarks.long_app",)
        ) as procs:
            pids = {"worker": procs["saga"].child.pid, "provider": provider.child.pid}
            stack = Stack(
                keel=Keel(keel_client, settings=Settings(task_queue=procs["saga"].task_queue)),
                provider=provider,
                home=folder / "home",
                pids={"server": server_pid, **pids} if server_pid else pids,
            )
            say("warm-up: one run of 3 tool turns")
            await one_run(stack, 3)
            runs: dict[str, list[dict[str, Any]]] = {}
            for n in turns:
                runs[str(n)] = [await one_run(stack, n) for _ in range(REPS.get(n, 1))]
    finally:
        await provider.stop()
    result = {
        "commit": git_commit(),
        "turns": list(turns),
        "reps": {str(n): REPS.get(n, 1) for n in turns},
        "targets": TARGETS,
        "shape": SHAPE,
        "runs": runs,
        "summary": {n: summarise(rows) for n, rows in runs.items()},
    }
    baseline = latest_baseline()
    if baseline is not None:
        result["baseline"] = baseline["sources"]
    return result


SHAPE = (
    "one agent (benchmarks/long_app.py, worker --app benchmarks.long_app) calling bench_payload on every "
    "turn; the tool returns {call, of, done, text} with 2,048 characters of random base64url text seeded "
    "from its idempotency key; the scripted model (long_scenario.yaml) calls it N times, counting in the "
    "conversation, and answers when a result says done: N tool turns, N + 1 LLM calls. History = the "
    "whole continue-as-new chain: server-reported history_size_bytes summed over its runs, and the "
    "protobuf size of its events; a turn spans one call_llm scheduling to the next. Offline provider at "
    "0 ms latency, journal without bodies, context limit lifted. Time per turn = wall time of the run / N."
)


# --------------------------------------------------------------------------- standalone


async def run_long(folder: Path, turns: Sequence[int] = TURNS) -> dict[str, Any]:
    """The phase on a stack of its own in `folder`: a fresh server, provider and worker."""
    from agentkeel.temporal import connect

    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with keel_server(folder) as server:
        say(f"keel server at {server.address}; working folder {folder}")
        client = await connect(address=server.address)
        pid = server.process.pid if server.process is not None else None
        return await measure_long(folder, server.address, client, turns, server_pid=pid)


def main(argv: list[str] | None = None) -> None:
    """Run the phase on its own stack, print the table, write the JSON; leaves through `os._exit`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_long", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--turns", default=None, help="comma-separated tool turns per run (default 10,100,1000)"
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 turns only")
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="write benchmarks/results/long-baseline-<date>.json: the 'today' column of later runs",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    turns = (
        tuple(int(t) for t in args.turns.split(",")) if args.turns else (QUICK_TURNS if args.quick else TURNS)
    )
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-long-"))
    (folder / "keel.toml").write_text("")
    os.environ["KEEL_CONFIG"] = str(folder / "keel.toml")
    from agentkeel.logs import configure_logging

    configure_logging("console", "WARNING")
    started = time.perf_counter()
    try:
        results = asyncio.run(run_long(folder, turns))
    except (Exception, asyncio.CancelledError) as exc:
        say(f"failed: {type(exc).__name__}: {exc} (logs in {folder})")
        os._exit(1)
    stamp = datetime.now()
    document = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "commit": results["commit"],
        "machine": machine(),
        "results": {"long": results},
    }
    name = (
        f"long-baseline-{stamp:%Y%m%d-%H%M%S}.json"
        if args.save_baseline
        else f"long-{stamp:%Y%m%d-%H%M%S}.json"
    )
    out = args.out or RESULTS_DIR / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(long_table(results))
    print(f"\nJSON: {out} ({document['duration_s']} s)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
