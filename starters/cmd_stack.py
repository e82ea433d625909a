"""`keel server`, `keel worker`, `keel dev` (and the hidden `keel ping`): the local stack.

* `keel server` runs the Temporal dev server in the foreground with the platform's settings.
* `keel worker` runs the platform's worker against whatever Temporal the env config names.
* `keel dev` runs server, offline LLM provider and one worker as children with prefixed output.
* `keel ping` connects and describes the namespace: a minimal client command (tests, scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from agentkeel.dev.devserver import (
    DEFAULT_IP,
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    DevServer,
    DevServerError,
    answers,
    is_listening,
)
from agentkeel.search_attributes import cli_types
from agentkeel.settings import (
    Settings,
    clear_server_state,
    write_server_state,
)
from agentkeel.starters.cli import CliError
from agentkeel.starters.cli_common import load_cli_settings
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.temporal import TemporalUnavailable, connect

EXIT_UNAVAILABLE = ExitCode.UNREACHABLE
"""Exit code when Temporal cannot be reached."""
EXIT_NOT_FOUND = ExitCode.NOT_FOUND
"""Exit code of `keel ping` when the namespace does not exist."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `server`, `worker`, `dev` and the hidden `ping` to the `keel` parser."""
    server = subparsers.add_parser(
        "server",
        help="run the Temporal dev server (with the platform's search attributes) in the foreground",
        description="Run `temporal server start-dev` with the platform's search attributes "
        "and fast settings.",
    )
    _server_options(server)
    server.set_defaults(func=_server)

    worker = subparsers.add_parser(
        "worker",
        help="run a worker for every workflow and activity of the platform",
        description="Run a worker. The connection comes from Temporal's env config "
        "(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_PROFILE).",
    )
    worker.add_argument(
        "--task-queue", default=None, help="task queue to poll (default: settings, 'agentkeel')"
    )
    worker.add_argument("--metrics", metavar="HOST:PORT", default=None, help="serve Prometheus metrics here")
    _app_option(worker)
    worker.set_defaults(func=_worker)

    dev = subparsers.add_parser(
        "dev",
        help="run the server, the offline LLM provider and a worker together (Ctrl-C stops all)",
        description="Run the whole local stack as child processes with prefixed output.",
    )
    _server_options(dev)
    dev.add_argument("--task-queue", default=None, help="task queue of the worker")
    dev.add_argument("--metrics", metavar="HOST:PORT", default=None, help="worker metrics address")
    dev.add_argument("--no-llm", action="store_true", help="do not start the offline LLM provider")
    _app_option(dev)
    dev.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="PATH",
        help="scenario file or folder for the offline provider (repeatable; apps' scenarios load too)",
    )
    dev.set_defaults(func=_dev)

    # No `help=`: argparse then leaves it out of the command list.
    ping = subparsers.add_parser("ping", description="Connect to Temporal and describe the namespace.")
    ping.add_argument("--address", default=None, help="host:port (default: Temporal env config)")
    ping.add_argument("--namespace", default=None, help="namespace (default: Temporal env config)")
    ping.set_defaults(func=_ping)


def _app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE[:ATTR]",
        help="import your app (an agentkeel App: tools, teams, scenarios) and register it; repeatable, "
        "added to the apps of keel.toml / KEEL_APPS",
    )


def _with_apps(settings: Settings, apps: list[str]) -> Settings:
    """`settings` with the `--app` references added, each checked here: a typo is one line at start."""
    from agentkeel.app import AppError, load_app

    merged = [*settings.apps, *(a for a in apps if a not in settings.apps)]
    for reference in merged:
        try:
            load_app(reference)
        except AppError as exc:
            raise CliError(str(exc)) from None
    return settings.model_copy(update={"apps": merged})


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ip", default=DEFAULT_IP, help=f"address to bind (default {DEFAULT_IP})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--ui-port", type=int, default=None, help=f"Web UI port (default {DEFAULT_UI_PORT}, or --port + 1000)"
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--db", type=Path, default=None, help="SQLite file (default <home>/temporal.db: .keel/)"
    )
    store.add_argument("--in-memory", action="store_true", help="keep nothing when the server stops")
    parser.add_argument("--codec-endpoint", default=None, metavar="URL", help="remote codec for the Web UI")


def _dev_server(args: argparse.Namespace, settings: Settings, **kwargs: object) -> DevServer:
    return DevServer(
        ip=args.ip,
        port=args.port,
        ui_port=args.ui_port if args.ui_port is not None else args.port + 1000,
        db_path=None if args.in_memory else (args.db or settings.home / "temporal.db"),
        codec_endpoint=args.codec_endpoint,
        **kwargs,  # type: ignore[arg-type]
    )


def _stop_event() -> tuple[asyncio.Event, Callable[[], None]]:
    """An event set by SIGINT/SIGTERM, and a function removing the handlers."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def remove() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return stop, remove


def _say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    print(text, file=stream, flush=True)


# --------------------------------------------------------------------------- keel server


class _Relay(threading.Thread):
    """Copies the server's log lines to our stderr until muted: its shutdown chatter is only noise."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__(name="keel-server-log", daemon=True)
        self.source = source
        self.muted = False

    def run(self) -> None:
        for raw in iter(self.source.readline, b""):
            if not self.muted:
                sys.stderr.write(raw.decode(errors="replace"))
                sys.stderr.flush()


async def _server(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    server = _dev_server(args, settings, stderr=subprocess.PIPE)
    if is_listening(server._client_host, server.port):
        if await answers(server.address):
            _say(f"Temporal is already serving at {server.address}; nothing to start.")
            if server.codec_endpoint:
                # The running server's UI keeps the settings it started with.
                print(
                    "keel: --codec-endpoint was not applied: stop the running server (or `keel dev`) "
                    "and start it again with --codec-endpoint",
                    file=sys.stderr,
                )
            return 0
        raise CliError(
            f"port {server.port} on {args.ip} is in use by something that is not Temporal",
            ExitCode.SERVICE_FAILED,
        )
    stop, remove = _stop_event()
    relay: _Relay | None = None
    try:
        server.launch()
        assert server.process is not None and server.process.stderr is not None
        relay = _Relay(server.process.stderr)
        relay.start()
        try:
            await server.wait_ready()
        except DevServerError as exc:
            raise CliError(str(exc), code=ExitCode.SERVICE_FAILED) from None
        # Run links printed by other `keel` commands follow this server's --ui-port.
        write_server_state(settings.home, address=server.address, ui_url=server.ui_url)
        store = "in memory" if server.db_path is None else str(server.db_path)
        _say(
            f"Temporal dev server at {server.address} (data: {store}; "
            f"search attributes: {', '.join(cli_types())})"
        )
        _say(f"Web UI: {server.ui_url}")
        _say("Ctrl-C to stop.")
        died = asyncio.create_task(_wait_exit(server))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({died, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if died.done():
            code = died.result()
            _say(f"keel: the Temporal dev server exited with code {code}", err=True)
            return ExitCode.SERVICE_FAILED
        died.cancel()
        _say("stopping the Temporal dev server...")
        relay.muted = True
        return 0
    finally:
        remove()
        clear_server_state(settings.home)
        await server.stop()
        if relay is not None:
            relay.join(timeout=2)


async def _wait_exit(server: DevServer) -> int:
    assert server.process is not None
    # A thread blocked in wait(); it returns once the server exits, which `stop` guarantees.
    return await asyncio.to_thread(server.process.wait)


# --------------------------------------------------------------------------- keel worker


async def _worker(args: argparse.Namespace) -> int:
    from agentkeel.workers.metrics import MetricsBindError
    from agentkeel.workers.worker import run_worker

    settings = _with_apps(load_cli_settings(), args.app)
    try:
        await run_worker(settings, task_queue=args.task_queue, metrics_bind=args.metrics)
    except TemporalUnavailable as exc:
        raise CliError(str(exc), code=EXIT_UNAVAILABLE) from None
    except MetricsBindError as exc:
        raise CliError(str(exc), ExitCode.SERVICE_FAILED) from None
    return 0


# --------------------------------------------------------------------------- keel ping


async def _ping(args: argparse.Namespace) -> int:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    try:
        client = await connect(address=args.address, namespace=args.namespace)
    except TemporalUnavailable as exc:
        raise CliError(str(exc), code=EXIT_UNAVAILABLE) from None
    address = client.service_client.config.target_host
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(
                f"namespace {client.namespace} not found at {address}", code=EXIT_NOT_FOUND
            ) from None
        raise CliError(f"Temporal at {address} refused: {exc.message}", code=EXIT_UNAVAILABLE) from None
    _say(f"ok: Temporal at {address}, namespace {client.namespace}")
    return 0


# --------------------------------------------------------------------------- keel dev


def _keel_command(*argv: str) -> list[str]:
    # The interpreter running us, not whatever `keel` is on PATH.
    return [sys.executable, "-c", "from agentkeel.starters.cli import main; main()", *argv]


class _Child:
    """A child process whose output lines are printed with a `[name]` prefix."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        prefix = f"[{self.name}] "
        async for raw in self.process.stdout:
            sys.stdout.write(prefix + raw.decode(errors="replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pump, 2)
        return code

    async def stop(self, grace: float = 20.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.wait()


def _llm_available() -> bool:
    try:
        return importlib.util.find_spec("agentkeel.starters.cmd_llm") is not None
    except ModuleNotFoundError:
        return False


async def _dev(args: argparse.Namespace) -> int:
    settings = _with_apps(load_cli_settings(), args.app)
    server = _dev_server(args, settings)
    env = server.environ()
    env["PYTHONUNBUFFERED"] = "1"
    if settings.apps:
        # The children (worker, provider) read the apps as a user's keel.toml would give them.
        env["KEEL_APPS"] = ",".join(settings.apps)
    log_format = "console" if sys.stdout.isatty() else "json"
    common = ["--log-format", log_format]

    children: list[_Child] = []
    if is_listening(server._client_host, server.port) and await answers(server.address):
        _say(f"[dev] Temporal already serves {server.address}: using it")
    else:
        argv = ["server", "--ip", args.ip, "--port", str(args.port), "--ui-port", str(server.ui_port)]
        if args.in_memory:
            argv.append("--in-memory")
        elif args.db:
            argv += ["--db", str(args.db)]
        if args.codec_endpoint:
            argv += ["--codec-endpoint", args.codec_endpoint]
        children.append(_Child("server", _keel_command(*common, *argv), env))
    if _llm_available() and not args.no_llm:
        scenarios = [arg for path in args.scenario for arg in ("--scenario", str(path))]
        children.append(_Child("llm", _keel_command(*common, "llm", *scenarios), env))
    worker_argv = ["worker"]
    if args.task_queue:
        worker_argv += ["--task-queue", args.task_queue]
    if args.metrics:
        worker_argv += ["--metrics", args.metrics]
    worker = _Child("worker", _keel_command(*common, *worker_argv), env)

    stop, remove = _stop_event()
    started: list[_Child] = []
    try:
        for child in children:
            await child.start()
            started.append(child)
        if started and started[0].name == "server":
            await _wait_serving(server, started[0], stop)
        server_died = bool(started) and started[0].process.returncode is not None  # type: ignore[union-attr]
        if not stop.is_set() and not server_died:
            await worker.start()
            started.append(worker)
            _say(
                f"[dev] stack up: Temporal {server.address}, Web UI {server.ui_url}; Ctrl-C stops everything"
            )
        exits = {asyncio.create_task(c.wait(), name=c.name): c for c in started}
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        dead = [exits[t] for t in done if t in exits]
        for child in dead:
            _say(f"[dev] {child.name} {_how_it_ended(child)}; stopping the others", err=True)
        return ExitCode.SERVICE_FAILED if dead else ExitCode.OK
    finally:
        remove()
        # Reverse order: the worker drains before the server goes away.
        for child in reversed(started):
            await child.stop()


def _how_it_ended(child: _Child) -> str:
    code = child.process.returncode if child.process is not None else None
    if code is not None and code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def _wait_serving(server: DevServer, child: _Child, stop: asyncio.Event, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not stop.is_set():
        if child.process is not None and child.process.returncode is not None:
            return  # reported by the caller as a dead child
        if is_listening(server._client_host, server.port, timeout=0.2) and await answers(
            server.address, within=2.0
        ):
            return
        if loop.time() > deadline:
            raise CliError(
                f"the Temporal dev server did not answer on {server.address} within {within:.0f}s",
                ExitCode.SERVICE_FAILED,
            )
        await asyncio.sleep(0.2)
