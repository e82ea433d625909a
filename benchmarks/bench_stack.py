"""The processes a benchmark run starts: Temporal servers, the offline provider, workers; and the machine.

Every process is a child of the benchmark, started on a free port and stopped
(SIGTERM, then SIGKILL) when its block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import httpx

from agentkeel.dev.devserver import DevServer, answers, find_free_port, temporal_binary, terminate
from agentkeel.search_attributes import start_dev_flags

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_GRACE = 15.0


# --------------------------------------------------------------------------- generic child


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the child gets SIGTERM when the benchmark dies, so an interrupted run leaves nothing behind.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def python_env(folder: Path) -> dict[str, str]:
    """Environment for the Python children: bytecode caching on, cached under `folder`.

    The workflow sandbox re-imports the workflow's module for every run; without a
    bytecode cache (this machine sets PYTHONDONTWRITEBYTECODE=1) each run compiles
    it from source, which a normal install never does. The cache lives in the
    benchmark's working folder, not in the source tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


@dataclass
class Child:
    """A child process whose output goes to a log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def launch(self, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """Start the process; its standard error (and output unless `stdout` is given) go to the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        return self.process

    @property
    def pid(self) -> int:
        """The process id (the process must have been launched)."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
        if self.process is not None:
            await asyncio.to_thread(terminate, self.process, grace)
        if self._log is not None:
            self._log.close()
            self._log = None


def memory_of(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` (peak RSS) of a process, in bytes, from `/proc/<pid>/status`."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process (all its threads) has used, from `/proc/<pid>/stat`."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    # After the command name: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


# --------------------------------------------------------------------------- Temporal servers


def plain_server_args(port: int, db_path: Path) -> list[str]:
    """`temporal server start-dev --db-filename X` as documented, only with the platform's search
    attributes registered (the saga upserts them; that is a schema, not a speed setting)."""
    return [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        HOST,
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "warn",
        "--db-filename",
        str(db_path),
        *start_dev_flags(),
    ]


@contextlib.asynccontextmanager
async def keel_server(folder: Path) -> AsyncIterator[DevServer]:
    """The dev server exactly as `keel server` starts it: SQLite file, WAL, no 50 ms task grid."""
    log = (folder / "keel-server.log").open("ab")
    server = DevServer(
        port=find_free_port(), db_path=folder / "keel-server.db", headless=True, stdout=log, stderr=log
    )
    try:
        await server.start(READY_TIMEOUT)
        yield server
    finally:
        await server.stop()
        log.close()


@contextlib.asynccontextmanager
async def plain_server(folder: Path) -> AsyncIterator[str]:
    """A plain `temporal server start-dev --db-filename X`; yields its address."""
    port = find_free_port()
    child = Child(
        "plain-server", plain_server_args(port, folder / "plain-server.db"), folder / "plain-server.log"
    )
    child.launch()
    address = f"{HOST}:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not await answers(address, within=2.0):
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"plain Temporal server did not start; see {child.log_path}")
            await asyncio.sleep(0.2)
        yield address
    finally:
        await child.stop()


# --------------------------------------------------------------------------- offline provider


class Provider:
    """The offline LLM provider as its own process (`keel llm`), driven through its control API."""

    def __init__(
        self, folder: Path, scenario: Path, *, extra_args: Sequence[str] = (), name: str = ""
    ) -> None:
        self.port = find_free_port()
        self.child = Child(
            "offline-provider",
            [
                str(Path(sys.executable).parent / "keel"),
                "llm",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--scenario",
                str(scenario),
                "--no-builtin-scenarios",
                *extra_args,
            ],
            folder / f"provider{name}.log",
            env={**python_env(folder), "KEEL_LOG_LEVEL": "WARNING"},
        )
        self.http = httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", timeout=30.0)

    async def start(self) -> None:
        """Launch and wait until the control API answers."""
        self.child.launch()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get("/_control/health")).status_code == 200:
                    return
            if not self.child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"offline provider did not start; see {self.child.log_path}")
            await asyncio.sleep(0.1)

    async def set_faults(self, **fields: Any) -> None:
        """Replace the fault configuration (`PUT /_control/faults`)."""
        (await self.http.put("/_control/faults", json=fields)).raise_for_status()

    async def journal(self, since: int = 0) -> list[dict[str, Any]]:
        """Journal entries after sequence number `since`."""
        response = await self.http.get("/_control/journal", params={"since": since})
        response.raise_for_status()
        data = response.json()
        return list(data["entries"] if isinstance(data, dict) else data)

    async def stop(self) -> None:
        """Stop the process and close the control client."""
        await self.http.aclose()
        await self.child.stop()


# --------------------------------------------------------------------------- workers


class WorkerProc:
    """A benchmark worker process (`benchmarks.bench_worker`) of one kind."""

    def __init__(
        self,
        folder: Path,
        address: str,
        kind: str,
        task_queue: str,
        llm_port: int,
        *,
        tag: str = "",
        apps: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.task_queue = task_queue
        self.child = Child(
            f"worker-{kind}",
            [
                sys.executable,
                "-m",
                "benchmarks.bench_worker",
                "--address",
                address,
                "--task-queue",
                task_queue,
                "--kind",
                kind,
                "--llm-host",
                HOST,
                "--llm-port",
                str(llm_port),
                "--home",
                str(folder / "home"),
                *(arg for app in apps for arg in ("--app", app)),
            ],
            folder / f"worker-{kind}{tag}.log",
            env=python_env(folder),
        )

    async def start(self) -> None:
        """Launch and wait for its `ready` line."""
        process = self.child.launch(stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), READY_TIMEOUT)
        if line.strip() != b"ready":
            await self.child.stop()
            raise RuntimeError(f"{self.kind} worker did not start; see {self.child.log_path}")

    def memory(self) -> dict[str, int]:
        """Its current and peak RSS in bytes."""
        return memory_of(self.child.pid)

    async def stop(self) -> None:
        """Graceful stop (SIGTERM)."""
        await self.child.stop()


@contextlib.asynccontextmanager
async def workers(
    folder: Path,
    address: str,
    llm_port: int,
    kinds: Sequence[str] = ("bare", "saga"),
    tag: str = "",
    apps: Sequence[str] = (),
) -> AsyncIterator[dict[str, WorkerProc]]:
    """One worker process per kind, each on its own task queue (saga kinds also registering
    `apps`); stopped at the end."""
    procs = {
        kind: WorkerProc(
            folder,
            address,
            kind,
            f"bench-{kind}-{os.getpid()}{tag}",
            llm_port,
            tag=tag,
            apps=apps if kind != "bare" else (),
        )
        for kind in kinds
    }
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
        yield procs
    finally:
        await asyncio.gather(*(p.stop() for p in procs.values()))


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _temporal_cli_version() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [str(temporal_binary()), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip()
    return "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    ram = _ram_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(ram / 2**30, 1) if ram else None,
        "python": platform.python_version(),
        "temporalio": metadata.version("temporalio"),
        "temporal_cli": _temporal_cli_version(),
        "os": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
