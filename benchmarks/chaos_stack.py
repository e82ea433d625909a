"""The real processes the chaos scenarios break: Temporal dev server, offline LLM provider, `keel worker`s.

`ChaosStack` owns one offline provider (its own journal and faults), a
`keel.toml` naming it with the breaker settings under test, a ledger file, a
task queue, and any number of `keel worker` subprocesses. The Temporal server
is either borrowed (an address, e.g. the test session's dev server) or owned
(a dev server on a SQLite file, which the restart scenario stops and starts).

Everything here measures from outside, as an operator would: run results from
Temporal, side effects from the ledger file, requests from the provider's
journal, progress from the runs' histories.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle

from agentkeel.contracts import SagaRequest, SagaResult, TeamSpec
from agentkeel.dev.devserver import DevServer, find_free_port, terminate
from agentkeel.dev.offline.control import ProviderControl
from agentkeel.examples.travel import APP_REFERENCE as TRAVEL_APP
from agentkeel.examples.travel import team as travel_team
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.names import AGENT_SAGA_WORKFLOW, CALL_LLM_ACTIVITY, IDEMPOTENCY_HEADER
from agentkeel.outcomes import saga_result
from agentkeel.search_attributes import SagaStatus
from agentkeel.temporal import connect

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
FORWARD_ACTIONS = ("book_flight", "book_hotel", "charge_card")
"""What one completed travel run writes to the ledger, once each."""
TOOL_ACTIVITIES = frozenset(FORWARD_ACTIONS)
_PROGRESS_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
}
_CLOSED_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
}
_SCRUBBED_ENV = ("TEMPORAL_PROFILE", "TEMPORAL_API_KEY", "TEMPORAL_CONFIG_FILE", "KEEL_TEAMS_DIR")


def keel_argv(*args: str) -> list[str]:
    """The `keel` command line run by this interpreter (not whatever `keel` is on PATH)."""
    return [sys.executable, "-c", "from agentkeel.starters.cli import main; main()", *args]


def unattended_travel_team() -> TeamSpec:
    """The shipped `travel` team with `charge_card` no longer waiting for a person."""
    team = travel_team()
    tools = [t.model_copy(update={"requires_review": False}) for t in team.tools]
    return team.model_copy(update={"tools": tools, "review": team.review.model_copy(update={"tools": []})})


def event_seconds(event: Any) -> float:
    """A history event's time as epoch seconds."""
    return event.event_time.seconds + event.event_time.nanos / 1e9


def _wait_for_line(path: Path, needle: str, process: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode}: {path.read_text(errors='replace')}"
            )
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{needle!r} not seen within {within:.0f}s: {path.read_text(errors='replace')[-2000:]}"
    )


@dataclass
class WorkerProcess:
    """One `keel worker` subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Its process id (also the first part of its Temporal worker identity)."""
        return self.process.pid

    @property
    def identity_prefix(self) -> str:
        """Temporal's default worker identity is `<pid>@<host>`."""
        return f"{self.pid}@"

    def kill(self) -> float:
        """SIGKILL it; returns the wall-clock time of the kill."""
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()
        return at

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), SIGKILL if it lingers."""
        terminate(self.process, grace)

    def log(self) -> str:
        """What it wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Provider:
    """A `keel llm` subprocess with its control client."""

    process: subprocess.Popen[bytes]
    port: int
    control_port: int
    control: ProviderControl
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, scenarios: Iterable[Path] = ()) -> Provider:
        """Start `keel llm` on free ports and wait for its control API."""
        port, control_port = find_free_port(HOST), find_free_port(HOST)
        log_path = workdir / f"llm-{port}.log"
        extra: list[str] = []
        for path in scenarios:
            extra += ["--scenario", str(path)]
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                keel_argv(
                    "--log-format",
                    "json",
                    "--log-level",
                    "WARNING",
                    "llm",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--control-port",
                    str(control_port),
                    *extra,
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "KEEL_APPS": TRAVEL_APP},
            )
        control = ProviderControl(f"http://{HOST}:{control_port}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"keel llm exited: {log_path.read_text(errors='replace')}")
            try:
                control.wait_ready(timeout=0.2)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError("keel llm did not answer") from None
        return cls(process, port, control_port, control, log_path)

    def stop(self) -> None:
        """SIGTERM, SIGKILL if it lingers."""
        self.control.close()
        terminate(self.process, 10)


@dataclass
class RunOutcome:
    """How one run ended (or did not)."""

    workflow_id: str
    status: SagaStatus | None
    reason: str | None
    finished_at: float | None


@dataclass
class LedgerCheck:
    """What the ledger says about a set of runs."""

    duplicated: int
    """Side effects done more than once: repeated keys, plus repeated actions within one run."""
    incomplete: list[str]
    """Completed runs whose ledger lacks one of the three forward actions."""
    entries: int


@dataclass
class ChaosStack:
    """The processes of one scenario.

    Args:
        workdir: Folder for logs, the ledger, `keel.toml` (and the server's SQLite file when owned).
        address: A running Temporal server to use; None starts one on a SQLite file in `workdir`.
        reset_timeout_s: Breaker reset timeout of the offline provider in the workers' `keel.toml`.
        fail_max: Breaker threshold in the workers' `keel.toml`.
        scenarios: Extra scenario files for the provider.
    """

    workdir: Path
    address: str | None = None
    reset_timeout_s: float = 30.0
    fail_max: int = 5
    scenarios: list[Path] = field(default_factory=list)
    task_queue: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:10]}")
    server: DevServer | None = None
    provider: Provider | None = None
    client: Client | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    team: TeamSpec = field(default_factory=unattended_travel_team)

    @property
    def ledger_path(self) -> Path:
        """The ledger file every worker of the stack writes."""
        return self.workdir / "ledger.db"

    @property
    def db_path(self) -> Path:
        """The owned server's SQLite file."""
        return self.workdir / "temporal.db"

    async def __aenter__(self) -> ChaosStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.address is None:
            self.server = DevServer(
                db_path=self.db_path,
                headless=True,
                stdout=(self.workdir / "server.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            await self.server.start()
            self.address = self.server.address
        self.provider = await asyncio.to_thread(Provider.start, self.workdir, self.scenarios)
        (self.workdir / "keel.toml").write_text(
            "[providers.offline]\n"
            f'base_url = "http://{HOST}:{self.provider.port}/v1"\n'
            f"fail_max = {self.fail_max}\n"
            f"reset_timeout_s = {self.reset_timeout_s}\n"
            "timeout_s = 60\n\n"
            "[models.default]\n"
            'chain = ["offline:scripted"]\n'
        )
        self.client = await connect(address=self.address, namespace="default")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in self.workers:
            await asyncio.to_thread(worker.stop, 5.0)
        if self.provider is not None:
            await asyncio.to_thread(self.provider.stop)
        if self.server is not None:
            await self.server.stop()

    # ------------------------------------------------------------------ processes

    def worker_env(self) -> dict[str, str]:
        """The environment of a `keel worker` of this stack."""
        assert self.provider is not None and self.address is not None
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            PYTHONUNBUFFERED="1",
            KEEL_APPS=TRAVEL_APP,  # the travel example, loaded as an app like a user's
            TEMPORAL_ADDRESS=self.address,
            TEMPORAL_NAMESPACE="default",
            KEEL_CONFIG=str(self.workdir / "keel.toml"),
            KEEL_HOME=str(self.workdir / "home"),
            KEEL_LEDGER_PATH=str(self.ledger_path),
            KEEL_LLM_HOST=HOST,
            KEEL_LLM_PORT=str(self.provider.port),
            KEEL_TASK_QUEUE=self.task_queue,
        )
        return env

    async def spawn_worker(self, name: str | None = None) -> WorkerProcess:
        """Start a `keel worker` and wait until it polls."""
        name = name or f"worker-{len(self.workers) + 1}"
        log_path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        process = await asyncio.to_thread(self._launch_worker, log_path)
        worker = WorkerProcess(name, process, log_path)
        self.workers.append(worker)
        await asyncio.to_thread(_wait_for_line, log_path, "worker started", process, START_TIMEOUT_S)
        return worker

    def _launch_worker(self, log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as out:
            return subprocess.Popen(
                keel_argv("--log-format", "json", "worker", "--task-queue", self.task_queue),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.worker_env(),
            )

    async def restart_server(self, down_s: float) -> tuple[float, float]:
        """Stop the owned dev server, keep it down `down_s` seconds, start it on the same file and port.

        Returns:
            Wall-clock times at which it went down and answered again.
        """
        assert self.server is not None
        old = self.server
        stopped_at = time.time()
        await old.stop()
        await asyncio.sleep(down_s)
        self.server = DevServer(
            port=old.port,
            ui_port=old.ui_port,
            db_path=self.db_path,
            headless=True,
            stdout=(self.workdir / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        await self.server.start(within=60)
        return stopped_at, time.time()

    # ------------------------------------------------------------------ runs

    async def start_runs(self, count: int, label: str) -> list[WorkflowHandle]:
        """Start `count` unattended travel runs."""
        assert self.client is not None
        handles = []
        for i in range(count):
            handles.append(
                await self.client.start_workflow(
                    AGENT_SAGA_WORKFLOW,
                    SagaRequest(goal=f"Trip to Lisbon #{i}", team=self.team),
                    id=f"chaos-{label}-{i}-{uuid.uuid4().hex[:8]}",
                    task_queue=self.task_queue,
                    result_type=SagaResult,
                )
            )
        return handles

    async def wait_runs(self, handles: list[WorkflowHandle], within: float) -> list[RunOutcome]:
        """Wait for every run, at most `within` seconds; a run still going then has status None."""

        async def one(handle: WorkflowHandle) -> RunOutcome:
            try:
                result: SagaResult = await saga_result(handle)
            except Exception as exc:  # a failed workflow: lost
                return RunOutcome(handle.id, SagaStatus.FAILED, f"{type(exc).__name__}: {exc}", time.time())
            return RunOutcome(handle.id, result.status, result.reason, time.time())

        tasks = [asyncio.create_task(one(h)) for h in handles]
        done, pending = await asyncio.wait(tasks, timeout=within)
        for task in pending:
            task.cancel()
        outcomes = []
        for handle, task in zip(handles, tasks, strict=True):
            if task in done:
                outcomes.append(task.result())
            else:
                outcomes.append(RunOutcome(handle.id, None, "still running", None))
        return outcomes

    async def in_flight(self, handles: list[WorkflowHandle]) -> Counter[str]:
        """Activities started and not finished right now, by kind (`llm`, `tool`, other names)."""
        counts: Counter[str] = Counter()
        for handle in handles:
            desc = await handle.describe()
            for act in desc.raw_description.pending_activities:
                if act.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    continue
                name = act.activity_type.name
                counts[
                    "llm" if name == CALL_LLM_ACTIVITY else "tool" if name in TOOL_ACTIVITIES else name
                ] += 1
        return counts

    async def recovery_after(self, handles: list[WorkflowHandle], since: float) -> list[float]:
        """For each run still going at `since`: seconds from `since` to its next progress, longest first.

        Progress is a workflow or activity task started (by any worker) after `since`; runs that
        had already finished at `since` are left out.
        """
        gaps: list[float] = []
        for handle in handles:
            history = await handle.fetch_history()
            events = history.events
            if events and events[-1].event_type in _CLOSED_EVENTS and event_seconds(events[-1]) <= since:
                continue
            after = [event_seconds(e) for e in events if e.event_type in _PROGRESS_EVENTS]
            after = [t for t in after if t > since]
            if after:
                gaps.append(min(after) - since)
        return sorted(gaps, reverse=True)

    async def retried_activities(self, handles: list[WorkflowHandle]) -> Counter[str]:
        """Activities that needed more than one attempt, by name."""
        counts: Counter[str] = Counter()
        for handle in handles:
            history = await handle.fetch_history()
            scheduled: dict[int, str] = {}
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    scheduled[event.event_id] = (
                        event.activity_task_scheduled_event_attributes.activity_type.name
                    )
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    attrs = event.activity_task_started_event_attributes
                    if attrs.attempt > 1:
                        counts[scheduled.get(attrs.scheduled_event_id, "?")] += 1
        return counts

    # ------------------------------------------------------------------ evidence

    def ledger_check(self, outcomes: list[RunOutcome]) -> LedgerCheck:
        """Count duplicated side effects, and completed runs missing one."""
        if not self.ledger_path.exists():
            return LedgerCheck(0, [o.workflow_id for o in outcomes if o.status == SagaStatus.COMPLETED], 0)
        db = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True)
        try:
            dup_keys = db.execute("SELECT COUNT(*) - COUNT(DISTINCT idempotency_key) FROM ledger").fetchone()[
                0
            ]
            rows = db.execute("SELECT workflow_id, action FROM ledger WHERE reverses IS NULL").fetchall()
            total = db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
        finally:
            db.close()
        per_run: dict[str, Counter[str]] = {}
        for workflow_id, action in rows:
            per_run.setdefault(workflow_id, Counter())[action] += 1
        duplicated = int(dup_keys) + sum(
            n - 1 for counts in per_run.values() for n in counts.values() if n > 1
        )
        incomplete = [
            o.workflow_id
            for o in outcomes
            if o.status == SagaStatus.COMPLETED
            and any(per_run.get(o.workflow_id, Counter())[a] != 1 for a in FORWARD_ACTIONS)
        ]
        return LedgerCheck(duplicated, incomplete, int(total))

    def journal(self) -> list[dict[str, Any]]:
        """The provider's journal of `/v1/chat/completions` requests."""
        assert self.provider is not None
        return list(self.provider.control.journal(path="/v1/chat/completions"))


def breaker_open_spans(log_text: str) -> list[tuple[float, float]]:
    """Wall-clock spans during which a worker's LLM breaker was open, from its JSON log lines.

    A span starts at a change to `open` and ends at the next change (to half-open); a breaker
    still open at the end of the log gives a span ending at infinity.
    """
    spans: list[tuple[float, float]] = []
    opened: float | None = None
    for line in log_text.splitlines():
        if "llm circuit breaker state change" not in line:
            continue
        try:
            record = json.loads(line)
            at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        if record.get("new_state") == "open":
            opened = at if opened is None else opened
        elif opened is not None:
            spans.append((opened, at))
            opened = None
    if opened is not None:
        spans.append((opened, math.inf))
    return spans


def idempotency_key(entry: dict[str, Any]) -> str | None:
    """The `Idempotency-Key` a journaled request carried (one per saga step, stable across retries)."""
    return entry.get("headers", {}).get(IDEMPOTENCY_HEADER.lower())


@contextlib.contextmanager
def ledger_write_lock(path: Path):
    """Hold the ledger's write lock: tool activities block inside their write until released."""
    Ledger(path).close()  # the schema exists before anyone waits on it
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        db.close()
