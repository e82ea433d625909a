"""The example ticket tracker as a process the MCP tests start and stop themselves."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkeel.dev.devserver import find_free_port
from agentkeel.examples.tickets.team import SERVER_MODULE

START_TIMEOUT_S = 20.0


@dataclass
class TicketsHTTP:
    """The tracker over streamable HTTP on a free port; `stop()` and `start()` keep port and store."""

    store: Path
    port: int = field(default_factory=find_free_port)
    variant: str = "v1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, variant: str | None = None) -> TicketsHTTP:
        """Start the server (with another tool list when `variant` is `v2`) and wait until it listens."""
        self.variant = variant or self.variant
        command = [sys.executable, "-m", SERVER_MODULE, "--store", str(self.store), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--variant", self.variant], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"tickets server exited with {self.process.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tickets server did not listen on {self.port} within {START_TIMEOUT_S}s")

    def kill(self) -> None:
        """Kill the server (SIGKILL: no goodbye to its clients)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def tickets_in(store: Path) -> dict[int, dict[str, Any]]:
    """The tickets a tracker wrote to `store`, by number."""
    if not store.exists():
        return {}
    return {int(n): t for n, t in json.loads(store.read_text())["tickets"].items()}
