"""A throwaway PostgreSQL server for the store's tests, and its pytest fixtures.

The session starts one server from Debian's `postgresql` binaries (`initdb` and
`postgres`, found through `pg_config --bindir`, `/usr/lib/postgresql/*/bin`, or
`PATH`) in a temporary folder, on a free port, with its unix socket in that
folder, durability off (the data is thrown away), and stops it at the end. Each
test gets a database of its own.

PostgreSQL refuses to run as root, and CI runs as root: then the folder is given
to the unprivileged user `nobody` and the binaries run as that user through
`setpriv` (or `runuser`).

Without the binaries the tests skip with the reason, unless `KEEL_REQUIRE_POSTGRES=1`
(set by `.ci/run` once it has installed them): then a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from agentkeel.dev.devserver import find_free_port

REQUIRE_ENV = "KEEL_REQUIRE_POSTGRES"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 30.0
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are not installed here."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `postgres`.

    Raises:
        PostgresUnavailable: no such folder.
    """
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
    # Debian installs the server outside PATH, one folder per major version: newest first.
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    newest_first = sorted(
        versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    candidates += [Path(p) for p in reversed(newest_first)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found: install Debian's postgresql package"
    )


def _as_user(user: str | None) -> list[str]:
    """The command prefix that runs a binary as `user` (nothing when we are not root)."""
    if user is None:
        return []
    if shutil.which("setpriv"):  # execs in place: the pid we hold is the server's own
        entry = pwd.getpwnam(user)
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
    return ["runuser", "-u", user, "--"]


@dataclass
class PostgresServer:
    """A running server: connect as `postgres` (trust authentication) on 127.0.0.1:`port`."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def socket_dir(self) -> Path:
        """The folder of its unix socket."""
        return self.root / "socket"

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A `postgresql://` URL for `database` over TCP."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> str:
        """The server's log so far."""
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a throwaway server (see the module docstring).

    Raises:
        PostgresUnavailable: the binaries are missing.
        RuntimeError: `initdb` failed or the server did not become ready.
    """
    bindir = find_bindir()
    user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    (root / "socket").mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, root / "socket"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    prefix = _as_user(user)
    data = root / "data"
    init = subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
        + ["--locale=C", "--no-sync"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
    port = find_free_port()
    # Durability off: the data dies with the test session, and fsyncs would dominate the timings.
    settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "listen_addresses=127.0.0.1"]
    command = [
        *prefix,
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(root / "socket"),
    ]
    command += [arg for setting in settings for arg in ("-c", setting)]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes it for as long as it runs
    with log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = PostgresServer(root=root, port=port, process=process)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: PostgresServer) -> None:
    """Wait until the server accepts connections: the status line of `postmaster.pid` says `ready`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pid_file = server.root / "data" / "postmaster.pid"
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {server.log[-2000:]}")
        with contextlib.suppress(OSError):
            lines = pid_file.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres not ready after {START_TIMEOUT_S} s: {server.log[-2000:]}")
        time.sleep(0.02)  # startup poll, not a test's wait


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skips without the binaries, unless KEEL_REQUIRE_POSTGRES=1)."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url(name)
    admin = await asyncpg.connect(postgres_server.url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store's URL, once per driver: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))
